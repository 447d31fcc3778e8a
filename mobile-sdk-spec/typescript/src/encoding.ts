// Encodings written out by hand: React Native's URL and URLSearchParams are
// incomplete, and btoa/TextEncoder are not everywhere in older runtimes.

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** base64url without padding (RFC 4648 section 5). */
export function base64url(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += B64URL[(n >> 18) & 63]! + B64URL[(n >> 12) & 63]! + B64URL[(n >> 6) & 63]! + B64URL[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += B64URL[(n >> 18) & 63]! + B64URL[(n >> 12) & 63]!;
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += B64URL[(n >> 18) & 63]! + B64URL[(n >> 12) & 63]! + B64URL[(n >> 6) & 63]!;
  }
  return out;
}

/** Lower-case hex. */
export function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

/** UTF-8 bytes of s. */
export function utf8(s: string): Uint8Array {
  const out: number[] = [];
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

/** application/x-www-form-urlencoded (also a URL query), undefined values left out. */
export function formEncode(params: Record<string, string | undefined>): string {
  return Object.entries(params)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => encodeForm(k) + "=" + encodeForm(v))
    .join("&");
}

function encodeForm(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, "+");
}

/** Parses a query or form string; a repeated name keeps its first value. */
export function parseQuery(q: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of q.replace(/^[?#]/, "").split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const k = decodeForm(eq < 0 ? part : part.slice(0, eq));
    const v = eq < 0 ? "" : decodeForm(part.slice(eq + 1));
    if (!(k in out)) out[k] = v;
  }
  return out;
}

function decodeForm(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s;
  }
}

/** Splits a URL into what precedes the query and the query (no fragment). */
export function splitURL(u: string): { base: string; query: string } {
  const noFrag = u.split("#", 1)[0]!;
  const q = noFrag.indexOf("?");
  return q < 0 ? { base: noFrag, query: "" } : { base: noFrag.slice(0, q), query: noFrag.slice(q + 1) };
}
