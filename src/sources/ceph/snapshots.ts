/**
 * Snapshots of a Ceph source (spec 3.3, 3.5, design D12): `backy-<id>` per revision, made
 * with `rbd snap create` or, for `flyingcircus`, by the VM host through Consul (guest
 * frozen); only the newest good revision's snapshot is kept, foreign ones never touched.
 */
import { BackyError, errorMessage } from "../../util/errors.ts";
import { logger } from "../../util/log.ts";
import type {
  CephRbdSourceSettings,
  FlyingCircusSourceSettings,
} from "../../config/source_config.ts";
import { Rbd, RbdError, SnapshotProtectedError } from "./rbd.ts";
import { requestConsulSnapshot } from "../flyingcircus.ts";

const log = logger("ceph");

export const SNAP_PREFIX = "backy-";

/** The typed settings of a `ceph-rbd` or `flyingcircus` source. */
export type CephSettings = CephRbdSourceSettings | FlyingCircusSourceSettings;

/** The snapshots backy makes of one image, and the image's readiness. */
export class CephSnapshots {
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
    const s = this.settings;
    if (s.type === "flyingcircus") {
      const appeared = await requestConsulSnapshot({
        url: s.consulUrl,
        token: s.consulAclToken,
        vm: s.vm,
        snapshot: snap,
        timeoutSeconds: s.snapshotTimeout,
        hasSnapshot: async () => (await this.snapshots()).has(snap),
      });
      if (appeared) return { method: "consul" };
      log.warning("Consul snapshot request timed out; taking a plain snapshot (no fsfreeze)", {
        vm: s.vm,
        timeout: s.snapshotTimeout,
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
