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

describe("format: display width, cutting and fitting", function()
  it("counts terminal columns for emoji, Thai, combining marks and Hangul", function()
    local cases = {
      { "abc", 3 }, { "株式会社", 8 }, { "Cafe\u{301}", 4 }, { "e\u{301}\u{323}", 1 },
      { "สวัสดี", 4 },                      -- two of six code points are marks above
      { "ผู้ใหญ่", 4 },                       -- a vowel below and a tone mark above
      { "한국어", 6 }, { "\u{1100}\u{1161}\u{11A8}", 2 }, -- a syllable, and the same in jamo
      { "😀", 2 }, { "👍🏽", 2 }, { "👨\u{200D}👩\u{200D}👧", 2 }, { "❤\u{FE0F}", 2 },
      { "🇨🇭", 2 }, { "a\u{200B}b", 2 }, { "ｆｕｌｌ", 8 },
    }
    for _, c in ipairs(cases) do assert.equal(c[2], format.width(c[1]), c[1]) end
    assert.equal(3, format.width("\255\254x")) -- not UTF-8: bytes
  end)

  it("cuts a cell to a width with …, keeping marks with their letter", function()
    assert.equal("abc", format.cut("abc", 3))
    assert.equal("ab…", format.cut("abcd", 3))
    assert.equal("株…", format.cut("株式会社", 4)) -- a wide character never straddles the edge
    assert.equal("株…", format.cut("株式会社", 3))
    assert.equal("Cafe\u{301}…", format.cut("Cafe\u{301} Creme", 5))
    assert.equal("สวั…", format.cut("สวัสดี", 3))
    for _, s in ipairs { "abcdef", "株式会社さくら", "Cafe\u{301} Cre\u{300}me", "😀😀😀😀" } do
      for w = 1, 8 do assert.is_true(format.width(format.cut(s, w)) <= w) end
    end
  end)

  it("fits a table to a width: the widest columns narrowed first", function()
    local rows = {
      { id = "c1", organization = ("Very long organization name "):rep(3), ownerEmail = "a@b.example",
        jobStatus = "Working", tenants = { { id = "t", name = "株式会社さくら株式会社さくら" } } },
    }
    local out = sink()
    local w = format.writer("table", out, nil, { width = 80 })
    w:add(rows[1])
    assert(w:finish())
    local n = 0
    for l in out.text():gmatch("([^\n]*)\n") do
      n = n + 1
      assert.is_true(format.width(l) <= 80, l)
    end
    assert.equal(3, n)
    assert.matches("\nc1  Very long organi…  a@b%.example   Working ", out.text())
    assert.matches("^ID  Organization%s+Owner e%-mail  Job status  Country  Mode  Tenants\n", out.text())
    assert.matches("  株式会社さくら…\n$", out.text()) -- 15 columns of the 16 left: no half character
  end)
end)

describe("format: csv options", function()
  it("guards cells a spreadsheet would run as formulas, numbers aside", function()
    assert.equal("'=1+1", format.csv_guard("=1+1"))
    assert.equal("'+41 44 000", format.csv_guard("+41 44 000"))
    assert.equal("'-cmd|x", format.csv_guard("-cmd|x"))
    assert.equal("'@SUM(A1)", format.csv_guard("@SUM(A1)"))
    assert.equal("'\tx", format.csv_guard("\tx"))
    assert.equal("-3", format.csv_guard("-3"))
    assert.equal("a=b", format.csv_guard("a=b"))
    local out = sink()
    assert(format.write("csv", out, { { id = "x", organization = '=HYPERLINK("http://e.example","a,b")' } }))
    assert.truthy(out.text():find('\r\nx,"\'=HYPERLINK(""http://e.example"",""a,b"")",', 1, true))
  end)

  it("starts with a byte order mark with bom, and prints only the fields asked for", function()
    local out = sink()
    assert(format.write("csv", out, CUSTOMERS, nil, { bom = true, fields = { "organization", "id" } }))
    assert.equal("\239\187\191organization,id\r\nContoso,c1\r\n",
                 out.text():sub(1, #"\239\187\191organization,id\r\nContoso,c1\r\n"))
    local ok, err = pcall(format.writer, "csv", sink(), nil, { fields = { "nope" } })
    assert.is_false(ok)
    assert.matches("unknown field \"nope\"", err)
    assert.same({ "tenantId", "displayName", "street", "city", "state", "postalCode",
                  "countryLetterCode", "technicalNotificationMails" }, format.fields("csv", "organizations"))
    assert.is_nil(format.fields("json", "organizations"))
  end)
end)
