-- partnercustomers: customer inventory from the AvePoint Graph API and Microsoft Partner Center
-- (reference: doc/API.md).
-- The C core (partnercustomers.core) does HTTP, retries, auth and JSON; this is the Lua front.
-- The version is the core's (PC_VERSION in csrc/pc.h, the one place it is written).

local core = require "partnercustomers.core"

return {
  _VERSION = core._VERSION,
  Error = core.Error,
  is_error = core.is_error,
  job_status = require "partnercustomers.job_status",
  avepoint = require("partnercustomers.avepoint").new,
  partnercenter = require("partnercustomers.partnercenter").new,
  device_login = require("partnercustomers.device_login").device_login,
}
