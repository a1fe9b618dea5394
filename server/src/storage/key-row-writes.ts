/**
 * Whether a SQL text writes rows of `keys`, `kek_versions` or `dek_versions`,
 * the tables the hot path keeps rows of: their commits must wait for the
 * replicas (replica-synced-dialect.ts). A miss would let a replica serve a
 * stale row after the write answered, so this errs towards "yes"; a false
 * "yes" only costs a wait.
 *
 * Comments and string literals are removed first, in one pass (a `;` or a
 * table name inside them means nothing), then the verbs are matched with
 * patterns that do no unbounded backtracking: the whole check is linear in
 * the text's length.
 *
 * What it cannot see: dynamic SQL inside functions, DO blocks or EXECUTE of a
 * prepared statement. The service writes none of those; an operator who does
 * runs `CALL hot_path_await_replicas()` afterwards (decision 0008).
 */

/** At the very start of a statement's text: its commit returns without waiting for replicas. */
export const NO_REPLICA_SYNC = "/* no replica sync */";

const MENTIONS_KEY_TABLE = /keys|_versions/i;
const IDENTIFIER = String.raw`(?:"(?:[^"]|"")*"|[a-z_][\w$]*)`;
const KEY_TABLE = String.raw`"?(?:keys|kek_versions|dek_versions)"?(?![\w$"])`;
const VERB_ON_KEY_TABLE = new RegExp(
  String.raw`(?<![\w$])(?:(?:insert\s+into|merge\s+into|delete\s+from)|update)(?![\w$])\s*(?:only(?![\w$])\s*)?(?:${IDENTIFIER}\s*\.\s*)?${KEY_TABLE}`,
  "i",
);
const LISTS_TABLES = /^\s*(?:truncate|copy)(?![\w$])/i;
const NAMES_KEY_TABLE = new RegExp(String.raw`(?<![\w$])${KEY_TABLE}`, "i");

export function writesKeyRows(sqlText: string): boolean {
  if (sqlText.trimStart().startsWith(NO_REPLICA_SYNC)) return false;
  if (!MENTIONS_KEY_TABLE.test(sqlText)) return false;
  const code = withoutCommentsAndLiterals(sqlText);
  if (VERB_ON_KEY_TABLE.test(code)) return true;
  // TRUNCATE and COPY name their tables in a list: any key table in such a statement counts.
  return code.split(";").some((statement) => LISTS_TABLES.test(statement) && NAMES_KEY_TABLE.test(statement));
}

/** The text with each comment replaced by a blank and each string literal by `''` (nested block comments, E'' escapes, dollar quotes). */
export function withoutCommentsAndLiterals(text: string): string {
  const parts: string[] = [];
  let from = 0;
  let i = 0;
  const n = text.length;
  const cut = (end: number, replacement: string): void => {
    parts.push(text.slice(from, i), replacement);
    i = end;
    from = end;
  };
  while (i < n) {
    const c = text.charCodeAt(i);
    const next = text.charCodeAt(i + 1);
    if (c === 45 /* - */ && next === 45) {
      const end = text.indexOf("\n", i);
      cut(end < 0 ? n : end, " ");
    } else if (c === 47 /* / */ && next === 42 /* * */) {
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (text.charCodeAt(j) === 47 && text.charCodeAt(j + 1) === 42) {
          depth++;
          j += 2;
        } else if (text.charCodeAt(j) === 42 && text.charCodeAt(j + 1) === 47) {
          depth--;
          j += 2;
        } else {
          j++;
        }
      }
      cut(j, " ");
    } else if (c === 39 /* ' */) {
      const escapes = i > 0 && /[eE]/.test(text[i - 1]!) && (i < 2 || !/[\w$]/.test(text[i - 2]!));
      let j = i + 1;
      while (j < n) {
        const d = text.charCodeAt(j);
        if (escapes && d === 92 /* \ */) j += 2;
        else if (d === 39 && text.charCodeAt(j + 1) === 39) j += 2;
        else if (d === 39) break;
        else j++;
      }
      cut(Math.min(n, j + 1), "''");
    } else if (c === 36 /* $ */ && (i === 0 || !/[\w$]/.test(text[i - 1]!))) {
      const tag = /^\$(?:[a-z_][\w]*)?\$/i.exec(text.slice(i, i + 64));
      if (tag === null) {
        i++;
      } else {
        const end = text.indexOf(tag[0], i + tag[0].length);
        cut(end < 0 ? n : end + tag[0].length, "''");
      }
    } else {
      i++;
    }
  }
  parts.push(text.slice(from));
  return parts.join("");
}
