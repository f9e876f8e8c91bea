/**
 * The Lua that runs right after Envoy's jwt_authn on the routes Envoy verifies JWTs for. jwt_authn
 * verifies signatures, issuer, audiences, exp and nbf, and refuses nothing by itself
 * (`allow_missing_or_failed`); this script then decides exactly as ext-authz does (decide.ts,
 * authorizer.ts, jwt/verifier.ts, identity.ts) and answers in its words:
 *
 * - the credential is found where ext-authz looks (a header with a scheme matched without regard
 *   to case, a query parameter, a cookie; the same value in several places or a conflict), and
 *   only the token found there counts: Envoy's verdict is bound to it by its payload segment;
 * - what jwt_authn does not check: `alg` in the provider's list, any `crit`, `kid` (present, at
 *   most 256 characters; without one, only when exactly one key fits), `typ`, exp/nbf/iat with the
 *   provider's skew and maximum age, the required claims, the consumer claim, reserved subjects,
 *   consumer records linked to the provider (their plan), then the route's consumers, claims and
 *   scopes;
 * - refusals: 400/401/403 with ext-authz's JSON body and request id, its `WWW-Authenticate`
 *   (never the URL), marked in dynamic metadata so the gateway's error mapping keeps them;
 * - admitted: identity headers as ext-authz sets them, the credential removed as it removes it;
 *   the identity's consumer, plan and provider reach dynamic metadata (where limits, quotas and
 *   logs read it) through `portico.jwt_identity`, a native filter that copies those headers. The
 *   caller's address is not copied: Envoy's own (`%DOWNSTREAM_REMOTE_ADDRESS%`) is what reads it.
 *
 * A script error refuses with 500 (ext-authz's `internal_error`), never lets the request through.
 * The route's rules arrive in its LuaPerRoute `filter_context` (`v`, `policy`, `rv`, `records`),
 * their version `v` in its metadata under the filter's name too.
 */
import { IDENTITY_HEADERS, MAX_IDENTITY_VALUE_BYTES, RESERVED_CONSUMERS } from "@portico/contract";
import { luaString as lua } from "./lua-string.js";

/** The HTTP filter's name, also the dynamic metadata namespace a refusal is marked under. */
export const JWT_CHECKS_FILTER = "portico.jwt_checks";
/** Where the identity goes, whichever filter authenticated: ext_authz's namespace, which limits and logs read. */
export const IDENTITY_NAMESPACE = "envoy.filters.http.ext_authz";

/** ext-authz's words for each refusal (its decide.ts MESSAGES); test/integration/jwt-modes.test.ts compares the answers. */
export const REFUSALS = {
  missing_credentials: "This route requires authentication.",
  invalid_token: "The access token is not valid.",
  invalid_request: "Send one credential, in one place.",
  insufficient_scope: "The credential does not grant the scope this route requires.",
  consumer_not_allowed: "This consumer may not call this route.",
  claims_not_allowed: "The credential does not meet this route's requirements.",
  internal_error: "Authentication failed unexpectedly.",
} as const;

const CONSTANTS = `
local ID_NS = ${lua(IDENTITY_NAMESPACE)}
local MARK_NS = ${lua(JWT_CHECKS_FILTER)}
local H_CONSUMER, H_PLAN, H_PROVIDER = ${lua(IDENTITY_HEADERS.consumer)}, ${lua(IDENTITY_HEADERS.plan)}, ${lua(IDENTITY_HEADERS.provider)}
local H_SCOPES, H_KEY_ID = ${lua(IDENTITY_HEADERS.scopes)}, ${lua(IDENTITY_HEADERS.keyId)}
local ALL_ID = {${Object.values(IDENTITY_HEADERS).map(lua).join(", ")}}
local MAX_ID = ${MAX_IDENTITY_VALUE_BYTES}
local RESERVED = {${[...RESERVED_CONSUMERS].map((c) => `[${lua(c)}] = true`).join(", ")}}
local MESSAGES = {${Object.entries(REFUSALS)
  .map(([code, message]) => `${code} = ${lua(message)}`)
  .join(", ")}}
`;

const SCRIPT = String.raw`
local byte, char, sub, find, lower, gsub, gmatch, format = string.byte, string.char, string.sub, string.find, string.lower, string.gsub, string.gmatch, string.format
local concat, sort, floor, now = table.concat, table.sort, math.floor, os.time
local MAX_KID, MAX_SCOPES = 256, 256

-- JSON.stringify of a string.
local ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function jstr(s)
  return '"' .. (gsub(s, '[%z\1-\31"\\]', function(c) return ESC[c] or format("\\u%04x", byte(c)) end)) .. '"'
end

local BODY = {}
for code, message in pairs(MESSAGES) do BODY[code] = '{"code":' .. jstr(code) .. ',"message":' .. jstr(message) end

-- String.prototype.trim: ASCII whitespace and the Unicode spaces, line and paragraph separators, BOM.
local WIDE = { "\194\160", "\225\154\128", "\226\128\168", "\226\128\169", "\226\128\175", "\226\129\159", "\227\128\128", "\239\187\191" }
local function space_at(s, i)
  local b = byte(s, i)
  if b == nil then return 0 end
  if b == 32 or (b >= 9 and b <= 13) then return 1 end
  if b < 128 then return 0 end
  if b == 226 and byte(s, i + 1) == 128 then
    local c = byte(s, i + 2)
    if c and c >= 128 and c <= 138 then return 3 end
  end
  for _, w in ipairs(WIDE) do if sub(s, i, i + #w - 1) == w then return #w end end
  return 0
end
local function space_before(s, j)
  local b = byte(s, j)
  if b == nil then return 0 end
  if b == 32 or (b >= 9 and b <= 13) then return 1 end
  if b < 128 then return 0 end
  for k = 2, 3 do
    if j - k + 1 >= 1 and space_at(s, j - k + 1) == k then return k end
  end
  return 0
end
local function trim(s)
  local i, j = 1, #s
  while i <= j do local n = space_at(s, i); if n == 0 then break end; i = i + n end
  while j >= i do local n = space_before(s, j); if n == 0 then break end; j = j - n end
  return sub(s, i, j)
end

-- String.prototype.toLowerCase where it can reach ASCII: ASCII letters, and the Kelvin sign.
local function jlower(s)
  s = lower(s)
  if find(s, "\226\132\170", 1, true) then s = gsub(s, "\226\132\170", "k") end
  return s
end

-- Length in UTF-16 code units (JavaScript's .length).
local function u16len(s)
  local n = 0
  for i = 1, #s do
    local b = byte(s, i)
    if b < 128 or b >= 192 then n = n + 1 end
    if b >= 240 then n = n + 1 end
  end
  return n
end

-- The first n UTF-16 code units of s (what slice(0, n) keeps), and the rest.
local function u16split(s, n)
  if not find(sub(s, 1, n), "[\128-\255]") then return sub(s, 1, n), sub(s, n + 1) end
  local units, i = 0, 1
  while i <= #s and units < n do
    local b = byte(s, i)
    local size = b < 128 and 1 or b >= 240 and 4 or b >= 224 and 3 or b >= 192 and 2 or 1
    units = units + (size == 4 and 2 or 1)
    i = i + size
  end
  return sub(s, 1, i - 1), sub(s, i)
end

-- safeValue: printable ASCII but %, the rest percent-encoded, cut at max bytes.
local function safe(s, max)
  max = max or MAX_ID
  if #s < max and not find(s, "[^\32-\36\38-\126]") then return s end
  local out = gsub(s, "[^\32-\36\38-\126]", function(c) return format("%%%02X", byte(c)) end)
  if #out >= max then out = gsub(sub(out, 1, max), "%%[0-9A-F]?$", "") end
  return out
end

-- Number.prototype.toString.
local function numstr(n)
  if n == 0 then return "0" end
  if n ~= n then return "NaN" end
  if n == math.huge then return "Infinity" elseif n == -math.huge then return "-Infinity" end
  if n == floor(n) and n > -1e21 and n < 1e21 then return format("%.0f", n) end
  local sign = n < 0 and "-" or ""
  n = math.abs(n)
  local digits, e
  for p = 1, 17 do
    local s = format("%." .. (p - 1) .. "e", n)
    if tonumber(s) == n or p == 17 then
      local m, x = s:match("^([%d.]+)e([-+]%d+)$")
      digits, e = gsub(m, "%.", ""), tonumber(x)
      break
    end
  end
  digits = gsub(digits, "0+$", "")
  local k, at = #digits, e + 1
  local out
  if k <= at and at <= 21 then out = digits .. string.rep("0", at - k)
  elseif 0 < at and at <= 21 then out = sub(digits, 1, at) .. "." .. sub(digits, at + 1)
  elseif -6 < at and at <= 0 then out = "0." .. string.rep("0", -at) .. digits
  else
    local x = at - 1
    out = sub(digits, 1, 1) .. (k > 1 and ("." .. sub(digits, 2)) or "") .. "e" .. (x >= 0 and "+" or "-") .. math.abs(x)
  end
  return sign .. out
end

-- base64url (Buffer.from(s, "base64url") on a segment of base64url characters).
local B64 = {}
do
  local a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  for i = 1, 64 do B64[byte(a, i)] = i - 1 end
end
local function unb64(s)
  local out, n, acc, bits = {}, 0, 0, 0
  for i = 1, #s do
    acc = acc * 64 + B64[byte(s, i)]
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      local p = 2 ^ bits
      local b = floor(acc / p)
      acc = acc - b * p
      n = n + 1
      out[n] = char(b)
    end
  end
  return concat(out)
end

-- The members of a JSON object text, as JSON.parse reads it: name -> the string for string
-- values, false for any other value (null included); nil when the text is not one JSON object.
local function ws(s, i) return (find(s, "[^ \t\n\r]", i)) or (#s + 1) end
local function utf8(cp)
  if cp < 128 then return char(cp)
  elseif cp < 2048 then return char(192 + floor(cp / 64), 128 + cp % 64)
  elseif cp < 65536 then return char(224 + floor(cp / 4096), 128 + floor(cp / 64) % 64, 128 + cp % 64)
  end
  return char(240 + floor(cp / 262144), 128 + floor(cp / 4096) % 64, 128 + floor(cp / 64) % 64, 128 + cp % 64)
end
local SIMPLE = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }
local function jstring(s, i)
  if sub(s, i, i) ~= '"' then return nil end
  local parts, j = {}, i + 1
  while true do
    local k = find(s, '[%z\1-\31"\\]', j)
    if not k then return nil end
    parts[#parts + 1] = sub(s, j, k - 1)
    local c = sub(s, k, k)
    if c == '"' then return concat(parts), k + 1 end
    if c ~= "\\" then return nil end
    local e = sub(s, k + 1, k + 1)
    if SIMPLE[e] then
      parts[#parts + 1] = SIMPLE[e]
      j = k + 2
    elseif e == "u" then
      local hex = sub(s, k + 2, k + 5)
      if not find(hex, "^%x%x%x%x$") then return nil end
      local cp = tonumber(hex, 16)
      j = k + 6
      if cp >= 0xD800 and cp <= 0xDBFF and find(sub(s, j, j + 5), "^\\u[dD][c-fC-F]%x%x$") then
        cp = 0x10000 + (cp - 0xD800) * 1024 + (tonumber(sub(s, j + 2, j + 5), 16) - 0xDC00)
        j = j + 6
      end
      parts[#parts + 1] = utf8(cp)
    else
      return nil
    end
  end
end
local function jnumber(s, i)
  local j = i
  if sub(s, j, j) == "-" then j = j + 1 end
  local c = sub(s, j, j)
  if c == "0" then j = j + 1
  elseif find(c, "^[1-9]$") then local _, e = find(s, "^%d+", j); j = e + 1
  else return nil end
  if sub(s, j, j) == "." then
    local _, e = find(s, "^%d+", j + 1)
    if not e then return nil end
    j = e + 1
  end
  c = sub(s, j, j)
  if c == "e" or c == "E" then
    j = j + 1
    c = sub(s, j, j)
    if c == "+" or c == "-" then j = j + 1 end
    local _, e = find(s, "^%d+", j)
    if not e then return nil end
    j = e + 1
  end
  return j
end
-- JSON's literals by their first character: the word, and the value it reads as (JNULL for null).
local JNULL = {}
local LITERALS = { t = { "true", true }, f = { "false", false }, n = { "null", JNULL } }
local function jscalar(s, i)
  local lit = LITERALS[sub(s, i, i)]
  if lit then
    local w = lit[1]
    if sub(s, i, i + #w - 1) == w then return i + #w end
    return nil
  end
  return jnumber(s, i)
end
-- Skips one value, checking its syntax; returns the index after it.
local function jskip(s, i)
  local stack, n = {}, 0
  local want_value = true
  while true do
    i = ws(s, i)
    if want_value then
      local c = sub(s, i, i)
      if c == "{" or c == "[" then
        local close = c == "{" and "}" or "]"
        i = ws(s, i + 1)
        if sub(s, i, i) == close then
          i = i + 1
          want_value = false
        else
          n = n + 1
          stack[n] = close
          if close == "}" then
            local key
            key, i = jstring(s, i)
            if not key then return nil end
            i = ws(s, i)
            if sub(s, i, i) ~= ":" then return nil end
            i = i + 1
          end
        end
      elseif c == '"' then
        local v
        v, i = jstring(s, i)
        if not v then return nil end
        want_value = false
      else
        i = jscalar(s, i)
        if not i then return nil end
        want_value = false
      end
    else
      if n == 0 then return i end
      local c = sub(s, i, i)
      if c == "," then
        i = ws(s, i + 1)
        if stack[n] == "}" then
          local key
          key, i = jstring(s, i)
          if not key then return nil end
          i = ws(s, i)
          if sub(s, i, i) ~= ":" then return nil end
          i = i + 1
        end
        want_value = true
      elseif c == stack[n] then
        n = n - 1
        i = i + 1
      else
        return nil
      end
    end
  end
end
local function members(s)
  local i = ws(s, 1)
  if sub(s, i, i) ~= "{" then return nil end
  local out = {}
  i = ws(s, i + 1)
  if sub(s, i, i) == "}" then
    i = i + 1
  else
    while true do
      local key
      key, i = jstring(s, i)
      if not key then return nil end
      i = ws(s, i)
      if sub(s, i, i) ~= ":" then return nil end
      i = ws(s, i + 1)
      if sub(s, i, i) == '"' then
        local v
        v, i = jstring(s, i)
        if not v then return nil end
        out[key] = v
      else
        i = jskip(s, i)
        if not i then return nil end
        out[key] = false
      end
      i = ws(s, i)
      local c = sub(s, i, i)
      if c == "}" then i = i + 1; break end
      if c ~= "," then return nil end
      i = ws(s, i + 1)
    end
  end
  if ws(s, i) <= #s then return nil end
  return out
end

-- A JSON value as JSON.parse reads it, from index i: objects as tables by member name (a null
-- member left out, a repeated name's last value kept), arrays keyed 1..n (a null item leaves a
-- hole), numbers, strings, booleans, and JNULL for null; nil when the text there is no JSON value.
-- Returns the value and the index after it. Only payloads jwt_authn has verified are read, and its
-- parser takes no text nested deeper than 100 levels, so neither does this one.
local function jvalue(s, i, depth)
  i = ws(s, i)
  local c = sub(s, i, i)
  if c == '"' then return jstring(s, i) end
  if c == "{" or c == "[" then
    if depth >= 100 then return nil end
    local close, out, n = c == "{" and "}" or "]", {}, 0
    i = ws(s, i + 1)
    if sub(s, i, i) == close then return out, i + 1 end
    while true do
      local key, v
      if close == "}" then
        key, i = jstring(s, ws(s, i))
        if not key then return nil end
        i = ws(s, i)
        if sub(s, i, i) ~= ":" then return nil end
        i = i + 1
      else
        n = n + 1
        key = n
      end
      v, i = jvalue(s, i, depth + 1)
      if v == nil then return nil end
      if v == JNULL then out[key] = nil else out[key] = v end
      i = ws(s, i)
      c = sub(s, i, i)
      if c == close then return out, i + 1 end
      if c ~= "," then return nil end
      i = i + 1
    end
  end
  local j = jscalar(s, i)
  if not j then return nil end
  local lit = LITERALS[c]
  if lit then return lit[2], j end
  return tonumber(sub(s, i, j - 1)), j
end

-- The claims of a payload segment jwt_authn verified: nil unless its text is one JSON object.
local function payload_of(pseg)
  local text = unb64(pseg)
  local start = ws(text, 1)
  if sub(text, start, start) ~= "{" then return nil end
  local v, i = jvalue(text, start, 0)
  if v == nil or ws(text, i) <= #text then return nil end
  return v
end

-- What the checks need from a JWS header; remembered per distinct header segment (a provider's
-- tokens share a handful), so the text is read once, not per request.
local header_facts, header_count = {}, 0
local function facts_of(hseg)
  local f = header_facts[hseg]
  if f then return f end
  local m = members(unb64(hseg)) or {}
  f = { alg = m.alg, crit = m.crit ~= nil, kid = m.kid, typ = m.typ }
  if header_count >= 1024 then header_facts, header_count = {}, 0 end
  header_facts[hseg] = f
  header_count = header_count + 1
  return f
end

-- Bounded memos, per worker: two generations, the older dropped when the newer fills, so a
-- value in use stays while one seen once ages out.
local MEMO_SIZE = 1024
local function memo_get(m, k)
  local v = m.cur[k]
  if v ~= nil then return v end
  v = m.old[k]
  if v ~= nil then
    if m.n >= MEMO_SIZE then m.old, m.cur, m.n = m.cur, {}, 0 end
    m.cur[k] = v
    m.n = m.n + 1
  end
  return v
end
local function memo_put(m, k, v)
  if m.n >= MEMO_SIZE then m.old, m.cur, m.n = m.cur, {}, 0 end
  m.cur[k] = v
  m.n = m.n + 1
end
local function memo_of(t, name)
  local m = t[name]
  if m == nil then
    m = { cur = {}, old = {}, n = 0 }
    t[name] = m
  end
  return m
end

-- Envoy's Struct lists arrive as tables keyed 1..n (a null item leaves a hole); objects by name.
local function list_items(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "number" then return nil end
    keys[#keys + 1] = k
  end
  sort(keys)
  local out = {}
  for i, k in ipairs(keys) do out[i] = t[k] end
  return out
end

local function claim_matches(v, accepted)
  local t = type(v)
  if t == "string" then return accepted[v] == true end
  if t == "number" then return accepted[numstr(v)] == true end
  if t == "boolean" then return accepted[v and "true" or "false"] == true end
  if t == "table" then
    local items = list_items(v)
    if not items then return false end
    for _, item in ipairs(items) do if claim_matches(item, accepted) then return true end end
  end
  return false
end

local function add_scopes(v, out, seen)
  if type(v) == "string" then
    for s in gmatch(v, "[^ ]+") do
      if not seen[s] then seen[s] = true; out[#out + 1] = s end
    end
  elseif type(v) == "table" then
    for _, s in ipairs(list_items(v) or {}) do
      if type(s) == "string" and s ~= "" and not seen[s] then seen[s] = true; out[#out + 1] = s end
    end
  end
end

local function scopes_header(scopes, max)
  local out = ""
  for _, raw in ipairs(scopes) do
    local s = safe(raw, max)
    local next = out == "" and s or (out .. " " .. s)
    if #next > max then break end
    out = next
  end
  return out
end

-- Where ext-authz finds a credential (decide/extract.ts, request.ts).
local function url_decode(s)
  s = gsub(s, "%+", " ")
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end
local function query_values(path, name)
  local q = find(path, "?", 1, true)
  if not q then return {} end
  local stop = find(path, "#", q, true)
  local query = sub(path, q + 1, stop and stop - 1 or #path)
  local out = {}
  for part in gmatch(query, "[^&]+") do
    local eq = find(part, "=", 1, true)
    local k = eq and sub(part, 1, eq - 1) or part
    if url_decode(k) == name then out[#out + 1] = url_decode(eq and sub(part, eq + 1) or "") end
  end
  return out
end
local function parse_cookies(header)
  local out = {}
  if not header or header == "" then return out end
  for part in gmatch(header .. ";", "([^;]*);") do
    local eq = find(part, "=", 1, true)
    if eq then
      local name, value = trim(sub(part, 1, eq - 1)), trim(sub(part, eq + 1))
      if #value >= 2 and sub(value, 1, 1) == '"' and sub(value, -1) == '"' then value = sub(value, 2, -2) end
      if name ~= "" then out[#out + 1] = { name, value } end
    end
  end
  return out
end
local NONE = {}
-- The value a header source holds in a header's text (NONE when none): remembered per text.
local function header_value(src, raw)
  local m = memo_of(src, "_values")
  local out = memo_get(m, raw)
  if out ~= nil then return out end
  if src.pl == nil then out = { trim(raw) }
  else
    local head, rest = u16split(raw, src.n)
    if jlower(head) == src.pl then out = { trim(rest) }
    elseif jlower(trim(raw)) == src.pt then out = { "" }
    else out = NONE end
  end
  memo_put(m, raw, out)
  return out
end
local function values_at(hs, src)
  if src.h then
    local raw = hs:get(src.h)
    if raw == nil then return NONE end
    return header_value(src, raw)
  end
  if src.q then return query_values(hs:get(":path") or "", src.q) end
  local out = {}
  for _, c in ipairs(parse_cookies(hs:get("cookie"))) do
    if c[1] == src.c then out[#out + 1] = c[2] end
  end
  return out
end
-- The credential and where it was found: the one source that held it, or, when several did, the
-- list of them marked multi (a request's usual single place allocates nothing).
local function extract(hs, sources)
  local value, where = nil, nil
  for _, src in ipairs(sources) do
    for _, v in ipairs(values_at(hs, src)) do
      if value ~= nil and v ~= value then return nil, nil, true end
      value = v
      if where == nil then where = src
      elseif where ~= src then
        if where.multi == nil then where = { multi = true, where } end
        where[#where + 1] = src
      end
    end
  end
  return value, where, false
end

-- Whether jwt_authn verified this very token for the provider: the payload header it writes (only
-- it can: every listener removes a client's on arrival) carries the token's payload segment.
-- jwt_authn writes one value for each place it found the token in, and Envoy's get joins a
-- header's values with "," (which no payload segment holds): every one must be this token's.
local function verified(hs, p, pseg)
  local v = hs:get(p.fh)
  if v == pseg then return true end
  if v == nil then return false end
  for item in gmatch(v .. ",", "([^,]*),") do
    if item ~= pseg then return false end
  end
  return true
end

local function issuer_of(pseg)
  local m = members(unb64(pseg))
  return m and m.iss or nil
end

-- jose's normalizeTyp: lower case, and "application/" before a bare media subtype.
local function typ_of(t)
  local l = jlower(t)
  if find(l, "/", 1, true) then return l end
  return "application/" .. l
end

local function is_reserved(name)
  return RESERVED[jlower(trim(name))] == true
end

-- ext-authz's verifier on a token jwt_authn verified, in two parts that refuse alike: what the
-- token alone decides (token_problem: nil when it passes, else a refusal), and what the clock
-- decides (time_problem, on every request).
local function time_problem(p, exp, nbf, iat, t)
  local skew = p.skew
  if exp ~= nil and exp <= t - skew then return "expired" end
  if nbf ~= nil and nbf > t + skew then return "not_yet_valid" end
  if p.age and (t - iat) - skew > p.age then return "too_old" end
  if iat ~= nil and iat > t + skew then return "issued_in_future" end
  return nil
end
local function token_problem(p, hseg, pseg, payload)
  local f = facts_of(hseg)
  if type(f.alg) ~= "string" or not p.algs[f.alg] then return "alg_not_allowed" end
  if f.crit then return "crit_not_understood" end
  if f.kid == nil then
    if not p.one[f.alg] then return "no_usable_key" end
  elseif type(f.kid) ~= "string" or f.kid == "" or u16len(f.kid) > MAX_KID then
    return "malformed"
  end
  if p.typ and (type(f.typ) ~= "string" or typ_of(f.typ) ~= p.typ) then return "wrong_typ" end
  local exp, nbf, iat = payload.exp, payload.nbf, payload.iat
  if p.exp and exp == nil then return "missing_claim" end
  if exp ~= nil and type(exp) ~= "number" then return "expired" end
  if nbf ~= nil and type(nbf) ~= "number" then return "not_yet_valid" end
  if iat ~= nil and type(iat) ~= "number" then return "invalid_claim" end
  if p.age and iat == nil then return "missing_claim" end
  local raw
  for _, claim in ipairs(p.req) do
    if payload[claim] == nil then
      -- A claim present as null is present (jose's "in"); the payload as read leaves nulls out.
      raw = raw or members(unb64(pseg)) or {}
      if raw[claim] == nil then return "missing_claim" end
    end
  end
  return nil
end

local function deny(status, code, challenge)
  return { status = status, code = code, challenge = challenge }
end

-- The token of provider p, which jwt_authn verified: ext-authz's verdict but for the clock, then
-- the route's rules. It depends on the token and the route's filter context only (whose version
-- covers the consumer records), so it is remembered per token.
local function verdict(pol, p, hseg, pseg, payload)
  if token_problem(p, hseg, pseg, payload) then return deny(401, "invalid_token", pol.ch.invalid) end
  local raw = payload[p.cc]
  local consumer = type(raw) == "string" and raw or type(raw) == "number" and numstr(raw) or ""
  if consumer == "" then return deny(401, "invalid_token", pol.ch.invalid) end
  if is_reserved(consumer) then return deny(401, "invalid_token", pol.ch.invalid) end
  local record = pol.records[consumer]
  if record ~= nil then
    if not (p.links and p.links[consumer]) then return deny(401, "invalid_token", pol.ch.invalid) end
    if record.off then return deny(401, "invalid_token", pol.ch.invalid) end
  end
  local plan_claim = p.pc and payload[p.pc]
  local plan = (record and record.plan) or (type(plan_claim) == "string" and plan_claim ~= "" and plan_claim) or "default"
  local scopes, seen = {}, {}
  if p.sc then add_scopes(payload[p.sc], scopes, seen)
  else add_scopes(payload.scope, scopes, seen); add_scopes(payload.scp, scopes, seen) end
  while #scopes > MAX_SCOPES do scopes[#scopes] = nil end

  if pol.only and not pol.only[consumer] then return deny(403, "consumer_not_allowed") end
  if pol.claims then
    for _, c in ipairs(pol.claims) do
      if not claim_matches(payload[c.name], c.values) then return deny(403, "claims_not_allowed") end
    end
  end
  if pol.scopes then
    local granted = {}
    for _, s in ipairs(scopes) do granted[s] = true end
    local ok = pol.all
    for _, s in ipairs(pol.scopes) do
      if pol.all and not granted[s] then ok = false; break end
      if not pol.all and granted[s] then ok = true; break end
    end
    if not ok then return deny(403, "insufficient_scope", pol.ch.scope) end
  end
  return { status = 200, provider = p, consumer = safe(consumer), plan = safe(plan), scopes = scopes_header(scopes, pol.maxs) }
end

-- Per token of a provider: its segments, or why it is no token of anyone's (checked once).
local function shape_of(p, token)
  local m = memo_of(p, "_tokens")
  local s = memo_get(m, token)
  if s ~= nil then return s end
  if u16len(token) > p.max then s = { long = true }
  elseif find(token, "^[A-Za-z0-9_%-]+%.[A-Za-z0-9_%-]+%.[A-Za-z0-9_%-]+$") then
    local first = find(token, ".", 1, true)
    local second = find(token, ".", first + 1, true)
    s = { hseg = sub(token, 1, first - 1), pseg = sub(token, first + 1, second - 1) }
  else
    s = { jws = false }
  end
  memo_put(m, token, s)
  return s
end

-- The decision on the token of provider p: its verdict, the same table on every request (an
-- admission names its provider), unless the clock now refuses it.
local function authenticate(pol, p, s, payload)
  local v = s.verdict
  if v == nil then
    v = verdict(pol, p, s.hseg, s.pseg, payload)
    s.verdict, s.exp, s.nbf, s.iat = v, payload.exp, payload.nbf, payload.iat
  end
  -- Every refusal before the route's rules is this 401, so only those wait for the clock.
  if v.status == 401 then return v end
  if time_problem(p, s.exp, s.nbf, s.iat, now()) then return deny(401, "invalid_token", pol.ch.invalid) end
  return v
end

-- Envoy's ext_authz query_parameters_to_remove: the query parsed without decoding, the keys
-- removed, the rest written back sorted by key (each key's values in their order).
local function without_query_params(path, names)
  local q = find(path, "?", 1, true)
  if not q then return path end
  local base, query = sub(path, 1, q - 1), sub(path, q + 1)
  local values, keys = {}, {}
  local start = 1
  while start <= #query do
    local stop = find(query, "&", start, true) or (#query + 1)
    local param = sub(query, start, stop - 1)
    local eq = find(param, "=", 1, true)
    local k, v = param, ""
    if eq then k, v = sub(param, 1, eq - 1), sub(param, eq + 1) end
    if not names[k] then
      if not values[k] then values[k] = {}; keys[#keys + 1] = k end
      local list = values[k]
      list[#list + 1] = v
    end
    start = stop + 1
  end
  if #keys == 0 then return base end
  sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    for _, v in ipairs(values[k]) do out[#out + 1] = k .. "=" .. v end
  end
  return base .. "?" .. concat(out, "&")
end

-- Tokens jwt_authn did not verify for their provider, passed over on the way to a later one:
-- ext-authz stopped at the first whose token named that provider's issuer (and refused it).
local function stopped_earlier(passed)
  if passed == nil then return false end
  for _, d in ipairs(passed) do
    if issuer_of(d.pseg) == d.p.iss then return true end
  end
  return false
end

-- The decision, and where the admitted credential was found.
local ANONYMOUS = { status = 200, anonymous = true }
local function decide(hs, pol)
  local presented = false
  local passed = nil
  for _, p in ipairs(pol.ps) do
    local token, where, conflict = extract(hs, p.from)
    if conflict then
      if stopped_earlier(passed) then return deny(401, "invalid_token", pol.ch.invalid) end
      return deny(400, "invalid_request", pol.ch.request)
    end
    if token ~= nil then
      presented = true
      local s = shape_of(p, token)
      if s.long then return deny(401, "invalid_token", pol.ch.invalid) end
      -- Three base64url segments, or it is no JWT of anyone's (ext-authz's COMPACT_JWS).
      if s.pseg then
        -- The claims are read from the segment jwt_authn verified, once per token: having
        -- jwt_authn file every payload in dynamic metadata costs each request more than all
        -- the checks of a known token (bench/native-jwt.ts).
        local payload = nil
        local ok = verified(hs, p, s.pseg)
        if ok and s.verdict == nil then
          payload = payload_of(s.pseg)
          ok = payload ~= nil
        end
        if ok then
          if stopped_earlier(passed) then return deny(401, "invalid_token", pol.ch.invalid) end
          return authenticate(pol, p, s, payload), where
        end
        passed = passed or {}
        passed[#passed + 1] = { p = p, pseg = s.pseg }
      end
    end
  end
  if presented then return deny(401, "invalid_token", pol.ch.invalid) end
  if pol.anon then return ANONYMOUS end
  return deny(401, "missing_credentials", pol.ch.missing)
end

-- An admitted consumer's identity reaches dynamic metadata through the headers set here (the
-- native filter after this one, portico.jwt_identity, copies those the gateway reads): setting it
-- from Lua costs more than every check before it. An anonymous caller has no identity headers, so
-- its consumer and plan are set here.
local function admit(h, hs, pol, d, where)
  -- jwt_authn's payload headers never reach the upstream.
  for _, p in ipairs(pol.ps) do hs:remove(p.fh) end
  -- On a listener that removed every identity header on arrival (pol.fresh) there is none to
  -- replace or remove: adding costs Envoy less.
  if d.anonymous then
    local meta = h:streamInfo():dynamicMetadata()
    if not pol.fresh then
      for _, name in ipairs(ALL_ID) do hs:remove(name) end
    end
    meta:set(ID_NS, "consumer", "anonymous")
    meta:set(ID_NS, "plan", "anonymous")
    return
  end
  local scopes = d.scopes
  local set = pol.fresh and hs.add or hs.replace
  set(hs, H_CONSUMER, d.consumer)
  set(hs, H_PLAN, d.plan)
  set(hs, H_PROVIDER, d.provider.sn)
  if scopes ~= "" then set(hs, H_SCOPES, scopes) end
  if not pol.fresh then
    hs:remove(H_KEY_ID)
    if scopes == "" then hs:remove(H_SCOPES) end
  end
  if not pol.strip then return end
  -- The credential removed as ext-authz removes it: a header at once, the rest in turn.
  if where.h then
    hs:remove(where.h)
    return
  end
  local headers, query, cookies = {}, {}, {}
  local any_query, any_cookie = false, false
  for _, src in ipairs(where.multi and where or { where }) do
    if src.h then headers[src.h] = true
    elseif src.q then query[src.q] = true; any_query = true
    else cookies[src.c] = true; any_cookie = true end
  end
  if any_cookie and not headers["cookie"] then
    local kept = {}
    for _, c in ipairs(parse_cookies(hs:get("cookie"))) do
      if not cookies[c[1]] then kept[#kept + 1] = c[1] .. "=" .. c[2] end
    end
    if #kept == 0 then headers["cookie"] = true else hs:replace("cookie", concat(kept, "; ")) end
  end
  for name in pairs(headers) do hs:remove(name) end
  if any_query then hs:replace(":path", without_query_params(hs:get(":path") or "", query)) end
end

local function refuse(h, d, hs)
  h:streamInfo():dynamicMetadata():set(MARK_NS, "refused", d.code)
  local rid = (hs or h:headers()):get("x-request-id")
  local body = BODY[d.code] .. ((rid and rid ~= "") and (',"request_id":' .. jstr(rid)) or "") .. "}"
  local headers = { [":status"] = tostring(d.status), ["content-type"] = "application/json", ["cache-control"] = "no-store" }
  if d.challenge then headers["www-authenticate"] = d.challenge end
  h:respond(headers, body)
end

-- Each route's rules, read from its filter context once per version and worker, and the consumer
-- records, the same on every route, once per version of theirs; nil on a route without rules (the
-- filter is turned off there, so it does not run). The version is read from the route's metadata:
-- Envoy copies the whole filter context, every record with it, each time a script asks for it.
local policies, policy_count = {}, 0
local record_sets, record_count = {}, 0
local function policy_of(h)
  local v = h:metadata():get("v")
  local fc
  if v == nil then
    -- A route whose metadata does not name it: the filter context does, at a higher cost.
    fc = h:filterContext()
    v = fc:get("v")
    if v == nil then return nil end
  end
  local pol = policies[v]
  if pol == nil then
    fc = fc or h:filterContext()
    pol = fc:get("policy")
    local rv = fc:get("rv") or ""
    local records = record_sets[rv]
    if records == nil then
      records = fc:get("records") or {}
      -- Rules hold their records: both are dropped together, so at most 8 sets stay in memory.
      if record_count >= 8 then record_sets, record_count, policies, policy_count = {}, 0, {}, 0 end
      record_sets[rv] = records
      record_count = record_count + 1
    end
    pol.records = records
    if policy_count >= 256 then policies, policy_count = {}, 0 end
    policies[v] = pol
    policy_count = policy_count + 1
  end
  return pol
end

-- The request's headers are fetched once: each handle Envoy gives a script costs it.
local function run(h)
  local pol = policy_of(h)
  if pol == nil then return nil end
  local hs = h:headers()
  local d, where = decide(hs, pol)
  if d.status == 200 then admit(h, hs, pol, d, where) end
  return d, hs
end

-- Any failure refuses (ext-authz's internal_error): an error never lets a request through.
function envoy_on_request(h)
  local ok, d, hs = pcall(run, h)
  if not ok then
    h:logErr("JWT checks failed: " .. tostring(d))
    d, hs = deny(500, "internal_error"), nil
  end
  if d ~= nil and d.status ~= 200 then refuse(h, d, hs) end
end
`;

/** The script every listener with natively verified routes runs in its `portico.jwt_checks` filter. */
export const JWT_CHECKS_LUA = `-- Portico: ext-authz's JWT decisions after Envoy's jwt_authn (control-plane/src/translate/features/jwt-checks-lua.ts)\n${CONSTANTS}${SCRIPT}`;
