// What makes the TypeScript reader agree with mesh/policy.py to the letter:
// plain scalars typed by PyYAML's YAML 1.1 resolvers, and values quoted as
// Python's repr() quotes them.

import { Scalar } from "yaml";

const TAG = "tag:yaml.org,2002:";
export const STR = `${TAG}str`;
export const INT = `${TAG}int`;
export const FLOAT = `${TAG}float`;
export const MERGE = `${TAG}merge`;
export const NULL = `${TAG}null`;
export const KINDS: Readonly<Record<string, string>> = {
  [STR]: "a string",
  [INT]: "an integer",
  [FLOAT]: "a number",
  [`${TAG}bool`]: "a boolean",
  [NULL]: "null",
};
// PyYAML's implicit resolvers (yaml/resolver.py, YAML 1.1), tried in this
// order; a plain scalar none matches is a string. `yaml`'s own 1.1 schema
// differs in a few corners (`y` and `n` are booleans there, `1e3` a number),
// which would make the two readers disagree about the same file.
const RESOLVERS: readonly (readonly [string, RegExp])[] = [
  [`${TAG}bool`, /^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$/],
  [
    `${TAG}float`,
    /^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/,
  ],
  [INT, /^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$/],
  [MERGE, /^<<$/],
  [`${TAG}null`, /^(?:~|null|Null|NULL|)$/],
  [
    `${TAG}timestamp`,
    /^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$/,
  ],
  [`${TAG}value`, /^=$/],
];

/** The YAML tag PyYAML would give this scalar. */
export function tagOf(node: Scalar): string {
  if (node.tag !== undefined && node.tag !== "!") {
    return node.tag;
  }
  if (node.tag === "!" || node.type !== Scalar.PLAIN) {
    return STR;
  }
  const text = String(node.source);
  for (const [tag, pattern] of RESOLVERS) {
    if (pattern.test(text)) {
      return tag;
    }
  }
  return STR;
}

/** Python's repr() of a string, as the Python reader's messages quote values. */
export function pyRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let body = "";
  for (const char of text) {
    const code = char.codePointAt(0) as number;
    if (char === "\\" || char === quote) {
      body += `\\${char}`;
    } else if (char === "\n") {
      body += "\\n";
    } else if (char === "\r") {
      body += "\\r";
    } else if (char === "\t") {
      body += "\\t";
    } else if (code < 0x20 || code === 0x7f) {
      body += `\\x${code.toString(16).padStart(2, "0")}`;
    } else {
      body += char;
    }
  }
  return `${quote}${body}${quote}`;
}

/** The value PyYAML's constructor gives a scalar tagged INT (`0x1f`, `0o17` as `017`, `1_000`, `1:30`). */
export function pyInt(source: string): number {
  let text = source.replaceAll("_", "");
  let sign = 1;
  if (text.startsWith("-") || text.startsWith("+")) {
    sign = text.startsWith("-") ? -1 : 1;
    text = text.slice(1);
  }
  if (text === "0") {
    return 0;
  }
  if (text.startsWith("0b")) {
    return sign * parseInt(text.slice(2), 2);
  }
  if (text.startsWith("0x")) {
    return sign * parseInt(text.slice(2), 16);
  }
  if (text.startsWith("0")) {
    return sign * parseInt(text, 8);
  }
  if (text.includes(":")) {
    return sign * text.split(":").reduce((total, digits) => total * 60 + Number(digits), 0);
  }
  return sign * Number(text);
}

/** The value PyYAML's constructor gives a scalar tagged FLOAT (`.5`, `1e-3` is a string there, `.inf`, `1:30.5`). */
export function pyFloat(source: string): number {
  let text = source.replaceAll("_", "").toLowerCase();
  let sign = 1;
  if (text.startsWith("-") || text.startsWith("+")) {
    sign = text.startsWith("-") ? -1 : 1;
    text = text.slice(1);
  }
  if (text === ".inf") {
    return sign * Infinity;
  }
  if (text === ".nan") {
    return NaN;
  }
  if (text.includes(":")) {
    return sign * text.split(":").reduce((total, digits) => total * 60 + Number(digits), 0);
  }
  return sign * Number(text);
}
