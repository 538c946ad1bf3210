local format = require "partnercustomers.format"
local cjson = require "cjson.safe"

local sink = require("spec.helpers.util").sink

local function render(name, customers)
  local out = sink()
  assert(format.write(name, out, customers))
  return out.text()
end

local CUSTOMERS = {
  { id = "c1", organization = "Contoso", ownerEmail = "admin@contoso.com", jobStatus = "Working",
    jobStatusCode = 1, countryOrRegion = "United States", managementMode = 1,
    tenants = { { id = "t1", name = "contoso" }, { id = "t2", name = "contoso-eu" } } },
  { id = "c2", organization = "Zürich Straße, \"AG\"", ownerEmail = "ops@zh.example",
    jobStatus = "No Backup Update", jobStatusCode = 6, countryOrRegion = "Schweiz",
    managementMode = 0, tenants = {} },
  { id = "c3", organization = "Line\nbreak", jobStatus = "Weird", managementMode = 2,
    tenants = { { id = "t3" } }, extra = { nested = true } },
}

describe("format", function()
  it("lists its formats", function()
    assert.same({ "table", "csv", "json", "ndjson" }, format.NAMES)
  end)

  it("refuses an unknown format at the caller's line", function()
    -- (luassert's error_matches strips the position, so look at the raw message)
    local ok, err = pcall(function() format.writer("xml", sink()) end)
    assert.is_false(ok)
    assert.matches("^[^\n]*format_spec.lua:%d+: partnercustomers: format: unknown format", err)
  end)

  describe("table", function()
    it("aligns columns by display width", function()
      local list = { CUSTOMERS[1], CUSTOMERS[2], CUSTOMERS[3],
                     { id = "c4", organization = "株式会社さくら", ownerEmail = "jp@sakura.example",
                       jobStatus = "Failed", managementMode = 1, tenants = {} },
                     { id = "c5", organization = "Cafe\u{301} Cre\u{300}me", ownerEmail = "x@cafe.example",
                       jobStatus = "Failed", managementMode = 0, tenants = {} } }
      local lines = {}
      for l in render("table", list):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
      assert.equal(7, #lines)
      assert.matches("^ID%s+Organization%s+Owner e%-mail%s+Job status%s+Country%s+Mode%s+Tenants$",
                     lines[1])
      assert.matches("^%-%-%s+%-+", lines[2])
      -- terminal columns of a prefix: CJK takes two, a combining accent none (enough for this data)
      local function columns(s)
        local n = 0
        for _, cp in utf8.codes(s) do
          n = n + ((cp >= 0x3000 and cp <= 0x9FFF) and 2 or (cp >= 0x300 and cp <= 0x36F) and 0 or 1)
        end
        return n
      end
      local mail_col = columns(lines[1]:sub(1, lines[1]:find("Owner e-mail", 1, true) - 1))
      local status_col = columns(lines[1]:sub(1, lines[1]:find("Job status", 1, true) - 1))
      for i, c in ipairs(list) do
        local l = lines[i + 2]
        if c.ownerEmail then
          assert.equal(mail_col, columns(l:sub(1, l:find(c.ownerEmail, 1, true) - 1)), l)
        end
        assert.equal(status_col, columns(l:sub(1, l:find(c.jobStatus, 1, true) - 1)), l)
      end
      assert.matches("Zürich Straße, \"AG\"", lines[4], 1, true)
      assert.matches("contoso, contoso%-eu$", lines[3])
      assert.matches("Partner", lines[3])
      assert.matches("Customer", lines[4])
      assert.matches("To configure", lines[5])
      assert.matches("Line break", lines[5], 1, true) -- a newline never breaks a row
      assert.matches("t3$", lines[5])
      for _, l in ipairs(lines) do assert.not_matches("%s$", l) end
    end)

    it("writes the header alone when there is no customer", function()
      local text = render("table", {})
      assert.matches("^ID%s+Organization.-\n%-%-.-\n$", text)
    end)
  end)

  describe("csv", function()
    it("follows RFC 4180", function()
      local text = render("csv", CUSTOMERS)
      local rows = {}
      for row in text:gmatch("(.-)\r\n") do rows[#rows + 1] = row end
      assert.equal("id,organization,ownerEmail,jobStatus,jobStatusCode,countryOrRegion,"
                   .. "managementMode,tenantIds,tenantNames", rows[1])
      assert.equal("c1,Contoso,admin@contoso.com,Working,1,United States,1,t1;t2,contoso;contoso-eu",
                   rows[2])
      assert.equal('c2,"Zürich Straße, ""AG""",ops@zh.example,No Backup Update,6,Schweiz,0,,', rows[3])
      assert.equal('c3,"Line\nbreak",,Weird,,,2,t3,', text:match("\r\n(c3.-)\r\n$"))
    end)

    it("quotes exactly the fields that need it", function()
      assert.equal("plain", format.csv_field("plain"))
      assert.equal('"a,b"', format.csv_field("a,b"))
      assert.equal('"say ""hi"""', format.csv_field('say "hi"'))
      assert.equal('"a\rb"', format.csv_field("a\rb"))
      assert.equal('"a\nb"', format.csv_field("a\nb"))
      assert.equal("", format.csv_field(""))
    end)

    it("streams row by row", function()
      local out = sink()
      local w = format.writer("csv", out)
      w:add(CUSTOMERS[1])
      assert.matches("^id,.-\r\nc1,", out.text())
      assert(w:finish())
      assert.equal(2, select(2, out.text():gsub("\r\n", "")))
    end)

    it("writes the header when there is no customer", function()
      assert.matches("^id,organization,[^\r\n]*\r\n$", render("csv", {}))
    end)
  end)

  describe("json", function()
    it("writes one array with stable key order and integers", function()
      local text = render("json", CUSTOMERS)
      local decoded = assert(cjson.decode(text))
      assert.equal(3, #decoded)
      assert.equal("Zürich Straße, \"AG\"", decoded[2].organization)
      assert.equal("Line\nbreak", decoded[3].organization)
      assert.same({ nested = true }, decoded[3].extra)
      assert.matches('^%[\n{"id":"c1","organization":"Contoso","ownerEmail":"admin@contoso.com",'
                     .. '"jobStatus":"Working","jobStatusCode":1,"countryOrRegion":"United States",'
                     .. '"managementMode":1,"tenants":%[{"id":"t1","name":"contoso"},', text)
      assert.matches('"tenants":%[%]', text) -- an empty list is an array, not an object
    end)

    it("writes [] for no customer", function()
      assert.equal("[]\n", render("json", {}))
    end)

    it("encodes numbers and escapes exactly", function()
      assert.equal('{"a":1,"b":0.5,"c":null,"d":"\\u0001\\"\\\\\\n"}',
                   format.json { a = 1, b = 0.5, c = 0 / 0, d = '\1"\\\n' })
      assert.equal("[1e+300,-3,0.1]", format.json { 1e300, -3, 0.1 })
    end)
  end)

  describe("ndjson", function()
    it("writes one object per line", function()
      local text = render("ndjson", CUSTOMERS)
      local n = 0
      for l in text:gmatch("([^\n]*)\n") do
        n = n + 1
        local obj = assert(cjson.decode(l))
        assert.equal(CUSTOMERS[n].id, obj.id)
      end
      assert.equal(3, n)
      assert.equal("", render("ndjson", {}))
    end)
  end)

  it("returns the output's write error", function()
    local broken = { write = function() return nil, "disk full" end }
    for _, name in ipairs(format.NAMES) do
      local ok, err = format.write(name, broken, CUSTOMERS)
      assert.is_nil(ok, name)
      assert.equal("disk full", err)
    end
  end)
end)
