/**
 * A Lua string literal for the scripts the translator writes (Envoy's `lua` filter runs LuaJIT,
 * Lua 5.1): printable ASCII as it is, every other byte as a decimal escape, since Lua 5.1 knows
 * neither JSON's `\u` escapes nor hex ones.
 */
export function luaString(s: string): string {
  let out = '"';
  for (const b of Buffer.from(s, "utf8")) {
    if (b === 0x22 || b === 0x5c) out += `\\${String.fromCharCode(b)}`;
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\${String(b).padStart(3, "0")}`;
  }
  return out + '"';
}
