/**
 * The check a transcoding route runs on a JSON body before Envoy's transcoder reads it (which
 * drops fields no message has): a Lua script for Envoy's `lua` filter, with the route's body
 * shapes (model/transcode-body.ts) as tables. A body that names an unknown field is refused with
 * 400 and the field's path; the error-answers mapper gives it the JSON error shape. A body that
 * is not JSON, or a call no binding takes, is left to the transcoder.
 */
import type { BodyShapes, ValueShape } from "../../model/transcode-body.js";
import { luaString as lua } from "./lua-string.js";

function luaShape(shape: ValueShape): string {
  if (shape === 0) return "0";
  if (typeof shape === "string") return lua(shape);
  return `{map=${luaShape(shape.map)}}`;
}

function luaTables(shapes: BodyShapes): string {
  const bindings = shapes.bindings.map(
    (b) =>
      `{m=${lua(b.method)},s={${b.segments.map(lua).join(",")}},v=${b.verb === undefined ? "nil" : lua(b.verb)},t=${luaShape(b.shape)}}`,
  );
  const messages = Object.keys(shapes.messages)
    .sort()
    .map((name) => {
      const fields = shapes.messages[name]!;
      const entries = Object.keys(fields)
        .sort()
        .map((f) => `[${lua(f)}]=${luaShape(fields[f]!)}`);
      return `[${lua(name)}]={${entries.join(",")}}`;
    });
  return `local bindings={${bindings.join(",")}}\nlocal messages={${messages.join(",")}}\n`;
}

/** The scanner: walks the JSON once, checking object keys against the messages' fields. */
const CHECK = String.raw`
local find, sub = string.find, string.sub
local function ws(s, i) return find(s, "[^ \t\r\n]", i) or (#s + 1) end
local function str(s, i)
  local j, out = i + 1, {}
  while true do
    local k = find(s, '["\\]', j)
    if not k then return nil end
    out[#out + 1] = sub(s, j, k - 1)
    if sub(s, k, k) == '"' then return table.concat(out), k + 1 end
    out[#out + 1] = sub(s, k, k + 1)
    j = k + 2
  end
end
local value
local function object(s, i, shape, path)
  local fields = type(shape) == "string" and messages[shape] or nil
  i = ws(s, i + 1)
  if sub(s, i, i) == "}" then return i + 1 end
  while true do
    if sub(s, i, i) ~= '"' then return nil end
    local key, j = str(s, i)
    if not key then return nil end
    local inner = 0
    if fields then
      inner = fields[key]
      if inner == nil then return nil, path .. key, shape end
    elseif type(shape) == "table" then
      inner = shape.map
    end
    j = ws(s, j)
    if sub(s, j, j) ~= ":" then return nil end
    local k, bad, where = value(s, j + 1, inner, fields and (path .. key .. ".") or path)
    if not k then return nil, bad, where end
    k = ws(s, k)
    local c = sub(s, k, k)
    if c == "}" then return k + 1 end
    if c ~= "," then return nil end
    i = ws(s, k + 1)
  end
end
value = function(s, i, shape, path)
  i = ws(s, i)
  local c = sub(s, i, i)
  if c == "{" then return object(s, i, shape, path) end
  if c == '"' then
    local _, j = str(s, i)
    return j
  end
  if c == "[" then
    i = ws(s, i + 1)
    if sub(s, i, i) == "]" then return i + 1 end
    while true do
      local j, bad, where = value(s, i, shape, path)
      if not j then return nil, bad, where end
      j = ws(s, j)
      local d = sub(s, j, j)
      if d == "]" then return j + 1 end
      if d ~= "," then return nil end
      i = j + 1
    end
  end
  return find(s, "[,}%]%s]", i) or (#s + 1)
end
local function fits(pattern, segs, i, j)
  local p = pattern[i]
  if p == nil then return segs[j] == nil end
  if p == "**" then return true end
  if segs[j] == nil or (p ~= "*" and p ~= segs[j]) then return false end
  return fits(pattern, segs, i + 1, j + 1)
end
local function shapes(method, path)
  path = sub(path, 1, (find(path, "?", 1, true) or (#path + 1)) - 1)
  local out = {}
  for _, b in ipairs(bindings) do
    local p = path
    if b.v then
      local tail = ":" .. b.v
      if sub(p, -#tail) ~= tail then p = nil else p = sub(p, 1, #p - #tail) end
    end
    if p and b.m == method then
      local segs = {}
      for seg in string.gmatch(p, "[^/]+") do segs[#segs + 1] = seg end
      if fits(b.s, segs, 1, 1) then out[#out + 1] = b.t end
    end
  end
  return out
end
function envoy_on_request(handle)
  local headers = handle:headers()
  local candidates = shapes(headers:get(":method"), headers:get(":path") or "")
  if #candidates == 0 then return end
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local s = body:getBytes(0, body:length())
  local first, firstWhere
  for _, shape in ipairs(candidates) do
    local ok, bad, where = value(s, 1, shape, "")
    -- It fits one of the methods the call may be for, or it is no JSON: the transcoder decides.
    if ok or not bad then return end
    first, firstWhere = first or bad, firstWhere or where
  end
  handle:respond({[":status"] = "400", ["content-type"] = "text/plain"},
    'unknown field "' .. first .. '" in ' .. sub(firstWhere, 2) .. ": the request body names a field the message does not have")
end
`;

/** The Lua source that checks the bodies of calls with these shapes. */
export function bodyCheckScript(shapes: BodyShapes): string {
  return luaTables(shapes) + CHECK;
}
