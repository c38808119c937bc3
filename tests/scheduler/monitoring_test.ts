/**
 * Monitoring that tells the truth (issue 11), end to end with the real daemon: `backy check`
 * through a job that starts failing and recovers, a job that never succeeds, a scheduler
 * restart in between; the HTTP endpoint (auth on every path, JSON matching the status file,
 * /metrics parsed as Prometheus text); the callbacks' stdin; the scheduler log line of a
 * failed run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { backy, randomBytes, tempDir } from "../helpers.ts";
import {
  Daemon,
  delay,
  freePort,
  readRevs,
  readStatus,
  type TestConfig,
  waitFor,
  writeConfig,
} from "./harness.ts";
import {
  havePerlPlugin,
  havePromtool,
  parseExposition,
  parsePluginOutput,
  promtoolCheck,
  realPerfParse,
} from "./plugin_output.ts";

const MiB = 1024 * 1024;
const TOKEN = "monitoring-token-0123456789";

async function step(t: Deno.TestContext, name: string, fn: () => Promise<void>): Promise<void> {
  if (!(await t.step(name, fn))) throw new Error(`step failed: ${name}`);
}

async function check(config: string, ...args: string[]) {
  const r = await backy(["check", "-c", config, ...args]);
  return { code: r.code, out: r.stdout, err: r.stderr };
}

Deno.test({
  name:
    "monitoring: check WARNING then CRITICAL then OK, restart keeps failures, HTTP, metrics, callbacks",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await tempDir("backy-monitor-");
    const base = join(dir, "base");
    await Deno.mkdir(base);
    const src = (name: string) => join(dir, `${name}.img`);
    await Deno.writeFile(src("vanish"), randomBytes(2 * MiB, 11));
    await Deno.writeFile(src("steady"), randomBytes(1 * MiB, 12));
    // `never`'s source does not exist yet.
    const hooks = join(dir, "hooks");
    await Deno.mkdir(hooks);
    for (const kind of ["completed", "failed"]) {
      const script = join(dir, `${kind}.sh`);
      await Deno.writeTextFile(
        script,
        `#!/bin/sh\nn=$(ls ${hooks} | wc -l)\ncat > ${hooks}/$n-${kind}-$1\necho ${kind} hook ran for $1\n`,
      );
      await Deno.chmod(script, 0o755);
    }
    const port = freePort();
    const configFile = join(dir, "backy.conf");
    const statusFile = join(base, "status");
    const config: TestConfig = {
      global: {
        "base-dir": base,
        "status-interval": 1,
        "telnet-addrs": "",
        "critical-failures": 2,
        "http-addrs": "127.0.0.1",
        "http-port": port,
        "http-tokens": { nagios: TOKEN },
        "backup-completed-callback": join(dir, "completed.sh"),
        "backup-failed-callback": join(dir, "failed.sh"),
        "callback-timeout": "10s",
      },
      // Weekly: the SLA stays OK throughout, so the states below come from failures alone,
      // and the first regular slot is almost never within the 5 minutes that delay a new
      // job's first backup (an hourly slot would be, one run in twelve).
      schedules: {
        weekly: { weekly: { interval: "1w", keep: 2 } },
        quick: { q: { interval: "2s", keep: 1 } },
      },
      jobs: {
        vanish: { schedule: "weekly", source: { type: "file", filename: src("vanish") } },
        steady: { schedule: "weekly", source: { type: "file", filename: src("steady") } },
        never: { schedule: "quick", source: { type: "file", filename: src("never") } },
      },
    };
    await writeConfig(configFile, config);
    const logFile = join(dir, "scheduler.log");
    let daemon = Daemon.start(configFile, logFile);
    const context = () => daemon.diagnostics();
    const api = (path: string, init: RequestInit = {}, token: string | null = TOKEN) =>
      fetch(`http://127.0.0.1:${port}${path}`, {
        ...init,
        headers: token === null ? {} : { authorization: `Bearer ${token}` },
      });
    const entry = async (job: string) => (await readStatus(statusFile)).find((e) => e.job === job);
    const hookFiles = () => [...Deno.readDirSync(hooks)].map((e) => e.name).sort();
    try {
      await step(t, "a job that never succeeded: WARNING with the reason", async () => {
        await waitFor("first runs done", async () => {
          const [v, s, n] = [await entry("vanish"), await entry("steady"), await entry("never")];
          return Number(v?.revisions) === 1 && Number(s?.revisions) === 1 &&
            Number(n?.failures) === 1;
        }, { context });
        // One failed run, and configured longer than its 2 s interval without a success.
        await delay(2100);
        const r = await waitFor("check WARNING", async () => {
          const r = await check(configFile);
          return r.code === 1 && r.out.includes("without a successful backup") ? r : undefined;
        }, { context });
        const out = parsePluginOutput(r.out);
        const since = (await entry("never"))!.since;
        assert.equal(
          out.summary,
          "WARNING: 1 jobs with a failed run, 1 jobs without a successful backup",
        );
        assert.deepEqual(out.long, [
          `never: 1 failed run in a row (CRITICAL at 2), last error: source ${
            src("never")
          } does not exist`,
          `never: no successful backup since it was configured (${since})`,
        ]);
        assert.equal(r.err, "");
        // The scheduler's own log says why, not only the exit status.
        const log = await daemon.log();
        assert.match(
          log,
          new RegExp(
            `^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d \\[\\d+\\] ERROR never: exit status 1: source ${
              src("never")
            } does not exist job=never failures=1 retry_in=120$`,
            "m",
          ),
        );
        assert.equal((await Deno.stat(logFile)).mode! & 0o777, 0o600);
        // The failure callback ran with the job's status entry on stdin.
        const failedHook = await waitFor(
          "failure callback",
          () => hookFiles().find((f) => f.endsWith("failed-never")),
        );
        const doc = YAML.parse(await Deno.readTextFile(join(hooks, failedHook)));
        assert.equal(doc.job, "never");
        assert.equal(doc.failures, 1);
        assert.equal(doc.last_error, `source ${src("never")} does not exist`);
        assert.match(
          log,
          /INFO backup-failed-callback done job=never output="failed hook ran for never"/,
        );
      });

      await step(
        t,
        "perfdata per job, read by the guidelines' format and Monitoring::Plugin",
        async () => {
          const r = await check(configFile);
          const out = parsePluginOutput(r.out);
          const status = await readStatus(statusFile);
          const labels = out.perf.map((p) => p.label);
          assert.deepEqual(labels, [
            "jobs",
            "problems",
            "never_failures",
            "steady_age",
            "steady_failures",
            "steady_duration",
            "steady_bytes",
            "vanish_age",
            "vanish_failures",
            "vanish_duration",
            "vanish_bytes",
          ]);
          const item = (l: string) => out.perf.find((p) => p.label === l)!;
          assert.deepEqual(item("jobs"), { label: "jobs", value: 3, uom: "", min: "0" });
          assert.deepEqual(item("problems"), { label: "problems", value: 1, uom: "", min: "0" });
          assert.deepEqual(item("never_failures"), {
            label: "never_failures",
            value: 1,
            uom: "",
            warn: "1",
            crit: "2",
            min: "0",
          });
          const steady = status.find((e) => e.job === "steady")!;
          const age = item("steady_age");
          assert.equal(age.uom, "s");
          assert.deepEqual([age.warn, age.crit, age.min], ["604800", "907200", "0"]);
          const lastTime = Date.parse(steady.last_time.replace(" UTC", "Z").replace(" ", "T")) /
            1000;
          assert.ok(Math.abs(age.value - (Date.now() / 1000 - lastTime)) < 5, `${age.value}`);
          assert.equal(item("steady_duration").value, parseFloat(steady.last_duration));
          assert.deepEqual(item("steady_bytes"), {
            label: "steady_bytes",
            value: Number(steady.last_bytes),
            uom: "B",
            min: "0",
          });
          assert.equal(Number(steady.last_bytes), 1 * MiB);
          if (await havePerlPlugin()) {
            // Perfdata = after the first line's `|`, plus everything after the next `|`.
            const [first, ...rest] = r.out.trimEnd().split("\n");
            const later = rest.join("\n");
            const perfText = `${first.slice(first.indexOf("|") + 1)} ${
              later.slice(later.indexOf("|") + 1)
            }`
              .replaceAll("\n", " ");
            const real = await realPerfParse(perfText.trim());
            assert.deepEqual(real.map((p) => p[0]), labels);
            assert.deepEqual(real[2], ["never_failures", "1", "", "1", "2", "0"]);
            assert.deepEqual(real.find((p) => p[0] === "steady_bytes"), [
              "steady_bytes",
              String(1 * MiB),
              "B",
              "",
              "",
              "0",
            ]);
          }
        },
      );

      await step(t, "HTTP: 401 without a valid token on every path", async () => {
        for (
          const [method, path] of [
            ["GET", "/metrics"],
            ["GET", "/v1/status"],
            ["GET", "/v1/jobs/vanish"],
            ["POST", "/v1/jobs/vanish/run"],
            ["GET", "/nothing/here"],
          ]
        ) {
          for (const token of [null, "wrong-token-0123456789", `${TOKEN}x`]) {
            const res = await api(path, { method }, token);
            assert.equal(res.status, 401, `${method} ${path} with ${token}`);
            assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="backy"');
            assert.deepEqual(await res.json(), { error: "missing or invalid bearer token" });
          }
        }
        const res = await api("/nothing/here");
        assert.equal(res.status, 404);
        await res.body?.cancel();
        // The token is never logged.
        assert.ok(!(await daemon.log()).includes(TOKEN));
        assert.ok((await daemon.log()).includes("HTTP endpoint: request refused (no valid token)"));
      });

      await step(t, "source gone: WARNING after one failed run, CRITICAL after two", async () => {
        await Deno.rename(src("vanish"), `${src("vanish")}.away`);
        const res = await api("/v1/jobs/vanish/run", { method: "POST" });
        assert.equal(res.status, 202);
        assert.deepEqual(await res.json(), { triggered: "vanish" });
        // Counted when the backup failed; `failing` once its expire is done too.
        await waitFor("one failure", async () => {
          const e = await entry("vanish");
          return Number(e?.failures) === 1 && e?.status === "failing";
        }, { context });
        let r = await check(configFile);
        assert.equal(r.code, 1, r.out);
        assert.ok(
          parsePluginOutput(r.out).long.includes(
            `vanish: 1 failed run in a row (CRITICAL at 2), last error: source ${
              src("vanish")
            } does not exist`,
          ),
          r.out,
        );
        // The failed job is `failing` while it waits for its retry, not just `waiting`.
        const e = (await entry("vanish"))!;
        assert.equal(e.status, "failing");
        assert.equal(e.last_error, `source ${src("vanish")} does not exist`);
        // A second failed run: CRITICAL with the last error in the long output.
        await (await api("/v1/jobs/vanish/run", { method: "POST" })).body?.cancel();
        await waitFor("two failures", async () => Number((await entry("vanish"))?.failures) === 2, {
          context,
        });
        r = await check(configFile);
        assert.equal(r.code, 2, r.out);
        const out = parsePluginOutput(r.out);
        assert.equal(out.summary, "CRITICAL: 1 jobs failing");
        assert.equal(
          out.long[0],
          `vanish: 2 failed runs in a row, last error: source ${src("vanish")} does not exist`,
        );
        const json = JSON.parse((await check(configFile, "--json")).out);
        assert.equal(json.code, 2);
        assert.equal(json.state, "CRITICAL");
        assert.deepEqual(json.jobs.find((j: { job: string }) => j.job === "vanish").failures, 2);
      });

      await step(t, "/v1/status and /v1/jobs/JOB agree with the status file", async () => {
        const res = await api("/v1/status");
        assert.equal(res.status, 200);
        const body = await res.json();
        assert.equal(body.version, "3.0.0");
        assert.deepEqual(Object.keys(body.workers), ["limit", "busy"]);
        assert.deepEqual(body.jobs.map((j: { job: string }) => j.job), [
          "never",
          "steady",
          "vanish",
        ]);
        const status = await readStatus(statusFile);
        for (const j of body.jobs) {
          const e = status.find((s) => s.job === j.job)!;
          assert.equal(j.failures, Number(e.failures), j.job);
          assert.equal(j.revisions, Number(e.revisions), j.job);
          assert.equal(j.last_bytes ?? 0, Number(e.last_bytes), j.job);
          assert.equal(j.last_error ?? "-", e.last_error, j.job);
          assert.equal(j.sla, e.sla);
        }
        const one = await (await api("/v1/jobs/vanish")).json();
        assert.deepEqual(one, body.jobs[2]);
        const missing = await api("/v1/jobs/nosuch");
        assert.equal(missing.status, 404);
        assert.deepEqual(await missing.json(), { error: "no such job: nosuch" });
        const filtered = await (await api("/v1/status?filter=*a*")).json();
        assert.deepEqual(filtered.jobs.map((j: { job: string }) => j.job), ["steady", "vanish"]);
        const wrong = await api("/v1/status", { method: "POST" });
        assert.equal(wrong.status, 405);
        await wrong.body?.cancel();
      });

      await step(t, "/metrics: valid exposition format, values as in the status file", async () => {
        const res = await api("/metrics");
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
        const text = await res.text();
        const samples = parseExposition(text);
        const status = await readStatus(statusFile);
        for (const e of status) {
          const s = (name: string) => samples.get(`${name}{job="${e.job}"}`);
          assert.equal(s("backy_job_consecutive_failures"), Number(e.failures), e.job);
          assert.equal(s("backy_job_revisions"), Number(e.revisions), e.job);
          assert.equal(s("backy_job_distrusted_revisions"), 0, e.job);
          assert.equal(s("backy_job_sla_ok"), e.sla === "OK" ? 1 : 0, e.job);
          if (Number(e.revisions) > 0) {
            assert.equal(s("backy_job_last_written_bytes"), Number(e.last_bytes), e.job);
            const lastTime = Date.parse(e.last_time.replace(" UTC", "Z").replace(" ", "T")) / 1000;
            assert.equal(Math.floor(s("backy_job_newest_revision_timestamp_seconds")!), lastTime);
          } else {
            // Never succeeded: no made-up value.
            assert.equal(s("backy_job_last_written_bytes"), undefined);
          }
        }
        assert.equal(samples.get("backy_scheduler_jobs"), 3);
        assert.equal(samples.get("backy_scheduler_workers_limit"), 1);
        assert.equal(samples.get('backy_scheduler_info{version="3.0.0"}'), 1);
        if (havePromtool()) {
          const r = await promtoolCheck(text);
          assert.equal(r.code, 0, r.output);
        }
      });

      await step(t, "a restarted scheduler keeps the failure count", async () => {
        daemon.signal("SIGTERM");
        await waitFor("daemon exit", () => daemon.status, { context });
        daemon = Daemon.start(configFile, logFile);
        await waitFor("new daemon's status file", async () => {
          const log = await daemon.log();
          return log.split("Scheduler starting").length === 3 &&
            (await entry("vanish"))?.status !== "";
        }, { context });
        assert.equal(Number((await entry("vanish"))!.failures), 2);
        assert.equal((await check(configFile)).code, 2);
      });

      await step(
        t,
        "OK again once the source is back and the job ran; completed callback",
        async () => {
          await Deno.rename(`${src("vanish")}.away`, src("vanish"));
          await Deno.writeFile(src("never"), randomBytes(1 * MiB, 13));
          await waitFor("HTTP up", async () => {
            try {
              await (await api("/v1/jobs/vanish/run", { method: "POST" })).body?.cancel();
              await (await api("/v1/jobs/never/run", { method: "POST" })).body?.cancel();
              return true;
            } catch {
              return false;
            }
          }, { context });
          const r = await waitFor("check OK", async () => {
            const r = await check(configFile);
            return r.code === 0 ? r : undefined;
          }, { timeoutMs: 20_000, context });
          assert.equal(r.out.split("\n")[0], "OK: 3 jobs within SLA | jobs=3;;;0 problems=0;;;0");
          assert.equal(Number((await entry("vanish"))!.failures), 0);
          // backup-completed-callback got `status --yaml` of backy 2.5: the complete revisions.
          const hook = await waitFor(
            "completed callback for vanish",
            () => hookFiles().filter((f) => f.endsWith("completed-vanish")).at(-1),
          );
          const revs = YAML.parse(await Deno.readTextFile(join(hooks, hook)));
          const onDisk = (await readRevs(join(base, "vanish"))).filter((r) => r.complete);
          assert.deepEqual(revs.map((r: { uuid: string }) => r.uuid), onDisk.map((r) => r.id));
          assert.equal(revs.length, 2);
          assert.equal(typeof revs[0].stats.duration, "number");
          assert.deepEqual(revs[0].tags, ["weekly"]);
        },
      );
    } finally {
      await daemon.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
