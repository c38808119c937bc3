/**
 * Group names to ids for the scheduler's `monitoring-group`. Deno has no getgrnam, so this
 * reads /etc/group (groups from NSS services such as LDAP need a numeric id in the config).
 */
import { BackyError } from "./errors.ts";

/** The gid of `name` in /etc/group-formatted `text`, or undefined. Pure. */
export function findGroup(text: string, name: string): number | undefined {
  for (const line of text.split("\n")) {
    const [group, , gid] = line.split(":");
    if (group === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return undefined;
}

/** A number is taken as it is; a name is looked up in /etc/group. BackyError if unknown. */
export function groupId(nameOrNumber: string): number {
  if (/^\d+$/.test(nameOrNumber)) return Number(nameOrNumber);
  let text = "";
  try {
    text = Deno.readTextFileSync("/etc/group");
  } catch {
    // no /etc/group: every name is unknown
  }
  const gid = findGroup(text, nameOrNumber);
  if (gid === undefined) {
    throw new BackyError(
      `monitoring-group: no group named ${nameOrNumber} in /etc/group (give its number instead)`,
    );
  }
  return gid;
}
