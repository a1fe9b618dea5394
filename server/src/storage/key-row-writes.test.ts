import { describe, expect, it } from "vitest";
import { NO_REPLICA_SYNC, withoutCommentsAndLiterals, writesKeyRows } from "./key-row-writes.js";

describe("which statements make their commit wait for replicas", () => {
  it("writes to keys, KEK versions and DEK versions do, however they are spelt", () => {
    for (const text of [
      'insert into "keys" ("tenant_id") values ($1)',
      'update "dek_versions" set "state" = $1 where "tenant_id" = $2',
      'delete from "kek_versions" where "tenant_id" = $1',
      "update dek_versions as d set wrapped_material = v.m from (values ($1)) as v(m)",
      "UPDATE public.keys SET state = 'REVOKED'",
      "update /* why */ keys set state = 'REVOKED'",
      "-- by hand\nupdate\n  keys set state = 'REVOKED'",
      "update /* nested /* comment */ still */ keys set state = 'x'",
      "merge into dek_versions as d using v on true when matched then delete",
      'update "my-schema".kek_versions set state = $1',
      'update "a""b"."keys" set state = $1',
      "delete from public . keys",
      'insert into"keys" values (1)',
      "update only keys set state = 'x'",
      "with gone as (select 1) delete from dek_versions where version = 1",
      "truncate table kek_versions",
      "truncate jobs, keys",
      "truncate /* ; */ keys",
      "copy dek_versions from stdin",
      "select 'it''s'; update keys set state = 'x'",
      "select E'\\' update'; update keys set state = 'x'",
      "select $$ ; $$; update keys set state = 'x'",
    ]) {
      expect(writesKeyRows(text), text).toBe(true);
    }
  });

  it("reads, other tables, and writes hidden in comments or literals do not; nor does the marked Decrypt bookkeeping", () => {
    for (const text of [
      'select * from "keys" where "tenant_id" = $1 for update',
      'insert into "key_events" ("tenant_id") values ($1) on conflict do update set "type" = $2',
      'update "keys_archive" set x = 1',
      'insert into "jobs" ("kind") values ($1)',
      "truncate jobs_monkeys",
      "select 'update keys set state = 1' from jobs",
      "select 1 /* update keys */ from jobs",
      "select $tag$ delete from keys $tag$",
      `${NO_REPLICA_SYNC} update dek_versions as d set last_decrypt_time = v.time`,
      `\n    ${NO_REPLICA_SYNC}\n    update dek_versions as d set last_decrypt_time = v.time`,
    ]) {
      expect(writesKeyRows(text), text).toBe(false);
    }
  });

  it("the marker counts only at the start: further in, the write still waits", () => {
    expect(writesKeyRows(`update keys set state = 'x' ${NO_REPLICA_SYNC}`)).toBe(true);
  });

  it("comments become blanks and literals empty strings, the rest untouched", () => {
    expect(withoutCommentsAndLiterals("a /* b /* c */ d */ e -- f\ng 'h''i' E'j\\'k' $q$ l $q$ $1")).toBe("a   e  \ng '' E'' '' $1");
  });

  it("finishes on texts built to make a backtracking matcher take minutes", () => {
    const rows = Array.from({ length: 20_000 }, (_, i) => `($${i * 3 + 1}, $${i * 3 + 2}, $${i * 3 + 3})`).join(", ");
    expect(writesKeyRows(`update dek_versions as d set wrapped_material = v.m from (values ${rows}) as v(a, b, m)`)).toBe(true);
    expect(writesKeyRows(`insert into "jobs" values ${rows}`)).toBe(false);
    expect(writesKeyRows("copy x ".repeat(150_000))).toBe(false);
    expect(writesKeyRows("update /*".repeat(100_000) + " keys")).toBe(false);
    expect(writesKeyRows(`copy "a" `.repeat(100_000) + "keys")).toBe(true);
  });
});
