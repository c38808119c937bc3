/**
 * The `ceph-rbd` source (spec 3.3, design D12): snapshot `backy-<id>`, stream the changes
 * since the parent's snapshot (or everything) out of `rbd export-diff`, keep only the
 * newest good revision's snapshot. `flyingcircus` differs only in how the snapshot is made.
 */
import { BackyError, errorMessage } from "../../util/errors.ts";
import { logger } from "../../util/log.ts";
import { DEFAULT_CONSUL_URL, DEFAULT_SNAPSHOT_TIMEOUT } from "../../config/source_config.ts";
import { parseDuration } from "../../config/duration.ts";
import { Rbd, RbdError, SnapshotProtectedError } from "./rbd.ts";
import { requestConsulSnapshot } from "../flyingcircus.ts";

const log = logger("ceph");

export const SNAP_PREFIX = "backy-";

export interface CephSettings {
  pool: string;
  image: string;
  fullAlways: boolean;
  /** flyingcircus: ask the VM host through Consul to freeze the guest and snapshot. */
  consul?: { vm: string; token: string | null; url: string; timeout: number };
}

export function cephSettings(type: string, source: Record<string, unknown>): CephSettings {
  const s: CephSettings = {
    pool: String(source.pool),
    image: String(source.image),
    fullAlways: source["full-always"] === true,
  };
  if (type === "flyingcircus") {
    const timeout = source.snapshot_timeout === undefined
      ? DEFAULT_SNAPSHOT_TIMEOUT
      : parseDuration(source.snapshot_timeout as string | number);
    if (timeout === undefined) throw new BackyError("invalid snapshot_timeout in job config");
    s.consul = {
      vm: String(source.vm),
      token: source.consul_acl_token ? String(source.consul_acl_token) : null,
      url: source.consul_url ? String(source.consul_url) : DEFAULT_CONSUL_URL,
      timeout,
    };
  }
  return s;
}

export class CephSource {
  readonly rbd = new Rbd();
  constructor(readonly settings: CephSettings) {}

  get spec(): string {
    return `${this.settings.pool}/${this.settings.image}`;
  }

  /** Fails before anything is created when the image cannot be reached (2.4.3). */
  async checkReady(): Promise<void> {
    const info = await this.rbd.info(this.spec);
    if (!info) {
      throw new BackyError(
        `Source is not ready: rbd image ${this.spec} does not exist (or its pool does not)`,
      );
    }
  }

  /** Names of this image's snapshots. */
  async snapshots(): Promise<Set<string>> {
    return new Set((await this.rbd.snapList(this.spec)).map((s) => s.name));
  }

  async createSnapshot(revId: string): Promise<{ method: string }> {
    const snap = SNAP_PREFIX + revId;
    if (this.settings.consul) {
      const c = this.settings.consul;
      const appeared = await requestConsulSnapshot({
        url: c.url,
        token: c.token,
        vm: c.vm,
        snapshot: snap,
        timeoutSeconds: c.timeout,
        hasSnapshot: async () => (await this.snapshots()).has(snap),
      });
      if (appeared) return { method: "consul" };
      log.warning("Consul snapshot request timed out; taking a plain snapshot (no fsfreeze)", {
        vm: c.vm,
        timeout: c.timeout,
      });
    }
    await this.rbd.snapCreate(this.spec, snap);
    return { method: "rbd" };
  }

  /**
   * Keeps only `backy-<keep>` (the newest good revision); other `backy-*` snapshots go,
   * protected ones are skipped with a warning, foreign snapshots are never touched.
   * `known`: the snapshot names when the caller already has them (else they are listed).
   */
  async cleanupSnapshots(keep: string | undefined, known?: Set<string>): Promise<void> {
    let names: Set<string>;
    try {
      names = known ?? await this.snapshots();
    } catch (e) {
      log.warning("Cannot list snapshots for cleanup", {
        image: this.spec,
        error: errorMessage(e),
      });
      return;
    }
    for (const name of names) {
      if (!name.startsWith(SNAP_PREFIX)) continue;
      if (keep !== undefined && name === SNAP_PREFIX + keep) continue;
      try {
        await this.rbd.snapRemove(this.spec, name);
        log.info("Removed snapshot", { snapshot: `${this.spec}@${name}` });
      } catch (e) {
        if (e instanceof RbdError && e.code === 2 && /not exist|No such/i.test(e.stderr)) {
          continue; // already gone (removed by hand since it was listed)
        }
        if (e instanceof SnapshotProtectedError) {
          log.warning("Snapshot is protected, not removing it", {
            snapshot: `${this.spec}@${name}`,
          });
        } else {
          log.warning("Cannot remove snapshot", {
            snapshot: `${this.spec}@${name}`,
            error: errorMessage(e),
          });
        }
      }
    }
  }
}
