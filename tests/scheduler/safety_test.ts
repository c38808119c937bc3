/**
 * The scheduler's own safety (issues 10 and 11) with the real daemon: a backup that hangs on a
 * lock held by someone else is killed at `backup-timeout` and reported; a callback that hangs
 * is killed with its children at `callback-timeout`; a running backup's `.progress` shows in
 * the status file and over HTTPS; files are owner-only or readable by the monitoring group,
 * checked as a real unprivileged user; JSON log lines on stdout without `-l`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { isRoot, randomBytes, sh, tempDir } from "../helpers.ts";
import {
  alive,
  Daemon,
  descendants,
  freePort,
  processesMentioning,
  readStatus,
  type TestConfig,
  waitFor,
  writeConfig,
} from "./harness.ts";

const MiB = 1024 * 1024;
const TOKEN = "safety-token-0123456789abcdef";
const NOGROUP = 65534;

async function step(t: Deno.TestContext, name: string, fn: () => Promise<void>): Promise<void> {
  if (!(await t.step(name, fn))) throw new Error(`step failed: ${name}`);
}

async function has(program: string): Promise<boolean> {
  return (await sh("sh", ["-c", `command -v ${program}`])).code === 0;
}

const haveOpenssl = await has("openssl");
const haveCurl = await has("curl");
const haveSetpriv = await has("setpriv");

Deno.test({
  name: "scheduler safety: backup-timeout, callback-timeout, progress, permissions, JSON log",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await tempDir("backy-safety-");
    await Deno.chmod(dir, 0o755); // so that the unprivileged user can reach the files
    const base = join(dir, "base");
    await Deno.mkdir(base, { mode: 0o755 });
    await Deno.writeFile(join(dir, "stuck.img"), randomBytes(1 * MiB, 21));
    await Deno.writeFile(join(dir, "ok.img"), randomBytes(1 * MiB, 22));
    // A callback that hangs and leaves a child behind: both must die at the timeout.
    const marker = `${Math.floor(Math.random() * 1e6) + 100}.5`;
    const hook = join(dir, "slow-hook.sh");
    await Deno.writeTextFile(hook, `#!/bin/sh\nsleep ${marker} &\nsleep ${marker}\n`);
    await Deno.chmod(hook, 0o755);
    // Someone else holds the job's `.purge` lock: `backup` waits for it forever (issue 10).
    const stuckDir = join(base, "stuck");
    await Deno.mkdir(stuckDir);
    const holder = await Deno.open(join(stuckDir, ".purge"), { create: true, write: true });
    await holder.lock(true);
    const port = freePort();
    const tls = haveOpenssl ? join(dir, "tls") : undefined;
    if (tls) {
      await Deno.mkdir(tls);
      const r = await sh("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-days",
        "1",
        "-keyout",
        join(tls, "key.pem"),
        "-out",
        join(tls, "cert.pem"),
      ]);
      assert.equal(r.code, 0, r.err);
    }
    const configFile = join(dir, "backy.conf");
    const statusFile = join(base, "status");
    const config: TestConfig = {
      global: {
        "base-dir": base,
        "worker-limit": 2,
        "status-interval": 1,
        "telnet-addrs": "",
        "backup-timeout": "3s",
        "callback-timeout": "1s",
        "backup-completed-callback": hook,
        "monitoring-group": NOGROUP,
        "http-port": port,
        "http-addrs": "127.0.0.1",
        "http-tokens": { ops: TOKEN },
        ...(tls
          ? { "http-tls-cert": join(tls, "cert.pem"), "http-tls-key": join(tls, "key.pem") }
          : {}),
      },
      // Weekly: a new job's first backup starts at once (unless its first slot is minutes away).
      schedules: { weekly: { weekly: { interval: "1w", keep: 2 } } },
      jobs: {
        stuck: { schedule: "weekly", source: { type: "file", filename: join(dir, "stuck.img") } },
        ok: { schedule: "weekly", source: { type: "file", filename: join(dir, "ok.img") } },
      },
    };
    await writeConfig(configFile, config);
    const daemon = Daemon.start(configFile, null, { args: ["--log-format", "json"] });
    const context = () => Promise.resolve(`daemon ${daemon.pid}, exited ${daemon.exited}`);
    const entry = async (job: string) => (await readStatus(statusFile)).find((e) => e.job === job);
    try {
      let backupPid = 0;
      await step(
        t,
        "a running backup's progress file shows in the status file and the API",
        async () => {
          const child = await waitFor("the hanging backup child", () => {
            return descendants(daemon.pid).find((p) =>
              p.args.includes("backup") && p.args.includes(stuckDir)
            );
          }, { context });
          backupPid = child.pid;
          const now = Date.now() / 1000;
          const fixture = {
            pid: backupPid,
            command: "backup",
            phase: "copying",
            done: 268435456,
            total: 1073741824,
            rate: 104857600,
            eta: 7.5,
            updated: now,
          };
          await Deno.writeTextFile(join(stuckDir, ".progress"), JSON.stringify(fixture), {
            mode: 0o600,
          });
          const e = await waitFor("progress in the status file", async () => {
            const e = await entry("stuck");
            return e?.progress ? e : undefined;
          }, { context });
          assert.equal(e.status, "running");
          assert.equal(e.progress, "copying 25% (256.00 MiB of 1.00 GiB, 100.00 MiB/s, ETA 0:08)");
          const url = `${tls ? "https" : "http"}://127.0.0.1:${port}/v1/jobs/stuck`;
          let body: string;
          if (haveCurl) {
            const r = await sh("curl", [
              "-sS",
              "--fail-with-body",
              ...(tls ? ["--cacert", join(tls, "cert.pem")] : []),
              "-H",
              `Authorization: Bearer ${TOKEN}`,
              url,
            ]);
            assert.equal(r.code, 0, r.err + r.out);
            body = r.out;
            // Without the token: 401, also over TLS.
            const denied = await sh("curl", [
              "-sS",
              "-o",
              "/dev/null",
              "-w",
              "%{http_code}",
              ...(tls ? ["--cacert", join(tls, "cert.pem")] : []),
              url,
            ]);
            assert.equal(denied.out, "401");
          } else {
            const client = tls
              ? Deno.createHttpClient({ caCerts: [await Deno.readTextFile(join(tls, "cert.pem"))] })
              : undefined;
            const res = await fetch(url, {
              headers: { authorization: `Bearer ${TOKEN}` },
              ...(client ? { client } : {}),
            });
            body = await res.text();
            client?.close();
          }
          const job = JSON.parse(body);
          assert.equal(job.status, "running");
          assert.deepEqual(job.progress, {
            phase: "copying",
            done: 268435456,
            total: 1073741824,
            rate: 104857600,
            eta: 7.5,
            updated: new Date(Math.round(now * 1000)).toISOString(),
          });
        },
      );

      await step(t, "the hanging backup is killed at backup-timeout and reported", async () => {
        const e = await waitFor("a failure of stuck", async () => {
          const e = await entry("stuck");
          return Number(e?.failures) === 1 ? e : undefined;
        }, { timeoutMs: 20_000, context });
        assert.equal(e.last_error, "killed after running longer than backup-timeout (3 s)");
        assert.equal(e.status, "failing");
        assert.ok(!("progress" in e)); // the backup is gone: no stale progress
        assert.ok(!alive(backupPid), `backup ${backupPid} survived`);
      });

      await step(
        t,
        "a hanging callback is killed with its children at callback-timeout",
        async () => {
          await waitFor("ok's backup", async () => Number((await entry("ok"))?.revisions) === 1, {
            context,
          });
          // It started right after ok's first backup and was killed a second later (the log
          // line is checked below); neither it nor the child it left may still run.
          await waitFor("the callback gone", () => processesMentioning(marker).length === 0, {
            timeoutMs: 8000,
            context,
          });
          assert.ok(alive(daemon.pid) && !daemon.exited, "the scheduler survives its callback");
        },
      );

      await step(
        t,
        "status file 0640 for the monitoring group; job config owner-only",
        async () => {
          const st = await Deno.stat(statusFile);
          assert.equal(st.mode! & 0o777, 0o640);
          assert.equal(st.gid, NOGROUP);
          assert.equal((await Deno.stat(join(base, ".lock"))).mode! & 0o777, 0o600);
          assert.equal((await Deno.stat(join(base, "ok", "config"))).mode! & 0o777, 0o600);
          assert.equal((await Deno.stat(join(base, "ok"))).mode! & 0o777, 0o700);
          assert.equal((await Deno.stat(join(base, "ok", "backy.log"))).mode! & 0o777, 0o600);
          if (isRoot() && haveSetpriv) {
            // A real unprivileged user: in the group it reads the status file, nothing else.
            const as = (groups: string, file: string) =>
              sh("setpriv", [
                "--reuid=65534",
                `--regid=${NOGROUP}`,
                groups,
                "cat",
                file,
              ]);
            const inGroup = await as(`--groups=${NOGROUP}`, statusFile);
            assert.equal(inGroup.code, 0, inGroup.err);
            assert.ok(inGroup.out.includes("job: stuck"));
            const config = await as("--clear-groups", join(base, "stuck", "config"));
            assert.notEqual(config.code, 0);
            assert.match(config.err, /Permission denied/);
          }
        },
      );

      await step(t, "stdout: JSON lines with time and level; the failure says why", async () => {
        daemon.signal("SIGTERM");
        await waitFor("daemon exit", () => daemon.status, { context });
        const { stdout } = await daemon.output();
        const lines = stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
        assert.ok(lines.length > 5);
        for (const l of lines) {
          assert.match(l.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
          assert.ok(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].includes(l.level), l.level);
          assert.equal(l.pid, daemon.pid);
          assert.equal(typeof l.message, "string");
        }
        const failure = lines.find((l) =>
          l.level === "ERROR" && l.message.startsWith("stuck: exit status ")
        );
        assert.ok(failure, stdout);
        assert.ok(
          failure.message.endsWith(": killed after running longer than backup-timeout (3 s)"),
          failure.message,
        );
        assert.equal(failure.job, "stuck");
        assert.equal(failure.failures, 1);
        assert.ok(
          lines.some((l) => l.message === "stuck: backup still running after 3 s, killing it"),
        );
        assert.ok(
          lines.some((l) =>
            l.level === "ERROR" && l.message === "backup-completed-callback killed after 1 s" &&
            l.job === "ok"
          ),
        );
        assert.ok(!stdout.includes(TOKEN));
        // Killed as a process group: the `sleep` the callback left in the background too.
        assert.deepEqual(processesMentioning(marker), []);
      });
    } finally {
      holder.close();
      await daemon.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
