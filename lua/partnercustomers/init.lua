-- partnercustomers: customer inventory from the AvePoint Graph API and Microsoft Partner Center
-- (see API.md).
-- The C core (partnercustomers.core) does HTTP, retries, auth and JSON; this is the Lua front.

local core = require "partnercustomers.core"

return {
  _VERSION = "partnercustomers 0.1.0",
  Error = core.Error,
  is_error = core.is_error,
  job_status = require "partnercustomers.job_status",
  avepoint = require("partnercustomers.avepoint").new,
  partnercenter = require("partnercustomers.partnercenter").new,
  device_login = require("partnercustomers.device_login").device_login,
}
