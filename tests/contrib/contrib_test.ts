/**
 * contrib/: the systemd unit, the logrotate file and the Nagios, NRPE and Icinga 2
 * definitions, each checked by the tool that reads it (ignored, with the Debian package to
 * install, where the tool is missing), and run against a real backy where they run backy.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  backedUpJob,
  fileExists,
  isRoot,
  MOD,
  ROOT,
  sh,
  spawnBacky,
  tempDir,
} from "../helpers.ts";
import { waitFor } from "../scheduler/harness.ts";

const CONTRIB = join(ROOT, "contrib");
const BACKY = "/usr/local/bin/backy";

async function has(cmd: string, args = ["--version"]): Promise<boolean> {
  return (await sh(cmd, args).catch(() => ({ code: 127 }))).code !== 127;
}

/** A `backy` executable (shell wrapper around this checkout) for definitions that run it. */
async function backyWrapper(dir: string): Promise<string> {
  const path = join(dir, "backy");
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\nexec '${Deno.execPath()}' run --allow-all --quiet '${MOD}' "$@"\n`,
    { mode: 0o755 },
  );
  await Deno.chmod(path, 0o755);
  return path;
}

const systemd = await has("systemd-analyze");

Deno.test({
  name: `systemd unit passes systemd-analyze verify${
    systemd ? "" : " (ignored: needs systemd-analyze, Debian package systemd)"
  }`,
  ignore: !systemd,
  fn: async () => {
    const dir = await tempDir();
    try {
      const text = await Deno.readTextFile(join(CONTRIB, "systemd/backy.service"));
      // What operators rely on: reload by SIGHUP, restart on failure, a bounded stop.
      assertMatch(text, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
      assertMatch(text, /^Restart=on-failure$/m);
      assertMatch(text, /^TimeoutStopSec=\d+min$/m);
      assertMatch(text, /^KillMode=mixed$/m);
      assertIncludes(text, `ExecStart=${BACKY} -l /var/log/backy.log scheduler -c /etc/backy.conf`);
      // verify wants the executable to exist: point the copy at a real one.
      const unit = join(dir, "backy.service");
      await Deno.writeTextFile(unit, text.replaceAll(BACKY, await backyWrapper(dir)));
      const r = await sh("systemd-analyze", ["verify", "--man=no", unit]);
      assertEquals({ code: r.code, err: r.err }, { code: 0, err: "" });
      // verify does complain about a broken line (so the empty output above means something).
      await Deno.writeTextFile(unit, text.replaceAll(BACKY, "/bin/true").replace("5min", "soon"));
      assertIncludes((await sh("systemd-analyze", ["verify", "--man=no", unit])).err, "soon");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const logrotate = await has("logrotate");
const canRotate = logrotate && isRoot() &&
  (await sh("flock", ["--version"]).catch(() => ({ code: 1 }))).code === 0;

Deno.test({
  name: `logrotate file: parses, and a running backy writes on into the new log${
    canRotate
      ? ""
      : " (ignored: needs root, logrotate and flock, Debian packages logrotate, util-linux)"
  }`,
  ignore: !canRotate,
  fn: async () => {
    const dir = await tempDir();
    try {
      const shipped = join(CONTRIB, "logrotate/backy");
      const dry = await sh("logrotate", ["-d", "-s", join(dir, "state.dry"), shipped]);
      assertEquals(dry.code, 0, dry.err);
      assert(!/error/i.test(dry.out + dry.err), dry.out + dry.err);
      const text = await Deno.readTextFile(shipped);
      assert(!/copytruncate|postrotate/.test(text.replace(/^#.*$/gm, "")), "nothing but rename");

      // The same rules over this test's files: a restore that waits for its lock keeps its
      // log open while logrotate renames it, then logs its interruption into the new file.
      const { job } = await backedUpJob(dir, [3], "chunked");
      const log = join(job, "backy.log");
      const conf = join(dir, "logrotate.conf");
      await Deno.writeTextFile(
        conf,
        text.replace("/var/log/backy.log", join(dir, "none.log")).replace(
          "/srv/backy/*/backy.log",
          join(dir, "*/backy.log"),
        ),
      );
      const holder = new Deno.Command("flock", { args: ["-x", join(job, ".purge"), "sleep", "30"] })
        .spawn();
      try {
        const restore = spawnBacky(["-l", log, "-b", job, "restore", join(dir, "out.img")]);
        await waitFor(
          "the restore's first log line",
          async () => (await Deno.readTextFile(log).catch(() => "")).includes("restore"),
        );
        const r = await sh("logrotate", ["-f", "-s", join(dir, "state"), conf]);
        assertEquals(r.code, 0, r.err);
        assert(await fileExists(`${log}.1`), "rotated");
        assertEquals((await Deno.stat(log)).mode! & 0o777, 0o600, "new log owner-only");
        restore.kill("SIGTERM");
        assertEquals((await restore.status).code, 143);
        const old = await Deno.readTextFile(`${log}.1`);
        const fresh = await Deno.readTextFile(log);
        assertIncludes(old, `$ backy -l ${log}`);
        assertIncludes(fresh, "Interrupted: restore from");
        assert(!old.includes("Interrupted"), "nothing written to the renamed file");
      } finally {
        holder.kill("SIGKILL");
        await holder.status;
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Runs a definition's command line (a backy wrapper in place of BACKY) through sh. */
async function runCommandLine(line: string, wrapper: string) {
  return await sh("sh", ["-c", line.replaceAll(BACKY, wrapper)]);
}

Deno.test("the NRPE command runs backy check: UNKNOWN without a status file", async () => {
  const dir = await tempDir();
  try {
    const text = await Deno.readTextFile(join(CONTRIB, "nrpe/backy.cfg"));
    const lines = text.split("\n").filter((l) => l && !l.startsWith("#"));
    assertEquals(lines, [`command[check_backy]=${BACKY} check -c /etc/backy.conf`]);
    const conf = join(dir, "backy.conf");
    await Deno.writeTextFile(
      conf,
      `global:\n  base-dir: ${dir}\nschedules:\n  s:\n    daily: {interval: 1d, keep: 1}\n` +
        `jobs: {}\n`,
    );
    const line = lines[0].split("=").slice(1).join("=").replace("/etc/backy.conf", conf);
    const r = await runCommandLine(line, await backyWrapper(dir));
    assertEquals({ code: r.code, out: r.out }, {
      code: 3,
      out: `UNKNOWN: No status file found at ${join(dir, "status")}\n`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A Nagios object definition, one directive per line. */
function nagiosObject(type: string, fields: Record<string, string | number>): string {
  return `define ${type} {\n${
    Object.entries(fields).map(([k, v]) => `    ${k} ${v}`).join("\n")
  }\n}\n`;
}

const nagios = await has("nagios4", ["--version"]);

Deno.test({
  name: `Nagios definitions pass nagios4 -v and run backy check${
    nagios ? "" : " (ignored: needs nagios4, Debian package nagios4-core)"
  }`,
  ignore: !nagios,
  fn: async () => {
    const dir = await tempDir();
    try {
      const always: Record<string, string> = { timeperiod_name: "always", alias: "always" };
      for (
        const d of ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
      ) {
        always[d] = "00:00-24:00";
      }
      const common = {
        max_check_attempts: 1,
        check_interval: 15,
        retry_interval: 1,
        check_period: "always",
        contacts: "admin",
        notification_period: "always",
      };
      const objects = [
        nagiosObject("timeperiod", always),
        nagiosObject("command", { command_name: "notify", command_line: "/bin/true" }),
        nagiosObject("contact", {
          contact_name: "admin",
          host_notification_period: "always",
          service_notification_period: "always",
          host_notification_options: "n",
          service_notification_options: "n",
          host_notification_commands: "notify",
          service_notification_commands: "notify",
        }),
        nagiosObject("host", { host_name: "backup01", address: "127.0.0.1", ...common }),
        nagiosObject("service", {
          host_name: "backup01",
          service_description: "backy",
          check_command: "check_backy!/etc/backy.conf",
          ...common,
        }),
        nagiosObject("service", {
          host_name: "backup01",
          service_description: "backy-nrpe",
          check_command: "check_backy_nrpe",
          ...common,
        }),
      ];
      await Deno.writeTextFile(join(dir, "objects.cfg"), objects.join("\n"));
      const main = join(dir, "nagios.cfg");
      await Deno.writeTextFile(
        main,
        [
          `cfg_file=${join(dir, "objects.cfg")}`,
          `cfg_file=${join(CONTRIB, "nagios/backy.cfg")}`,
          `check_result_path=${join(dir, "results")}`,
          `lock_file=${join(dir, "nagios.lock")}`,
          `temp_file=${join(dir, "nagios.tmp")}`,
          `status_file=${join(dir, "status.dat")}`,
          `log_file=${join(dir, "nagios.log")}`,
          "illegal_macro_output_chars=`~$&|'\"<>",
        ].join("\n") + "\n",
      );
      // nagios4 reads its configuration and writes check results as user nagios.
      await Deno.chmod(dir, 0o755);
      await Deno.mkdir(join(dir, "results"));
      await Deno.chmod(join(dir, "results"), 0o1777);
      const v = await sh("nagios4", ["-v", main]);
      assertEquals(v.code, 0, v.out.split("\n").filter((l) => /error|warning/i.test(l)).join("\n"));
      assertMatch(v.out, /^Total Warnings: +0$/m);
      assertMatch(v.out, /Checked 3 commands\./);
      assertMatch(v.out, /^Total Errors: +0$/m);

      // check_backy's command line, with $ARG1$ = a config whose status file is missing.
      const text = await Deno.readTextFile(join(CONTRIB, "nagios/backy.cfg"));
      const line = /command_name\s+check_backy\n\s+command_line\s+(.+)\n/.exec(text)![1];
      const r = await runCommandLine(
        line.replace("$ARG1$", join(dir, "missing.conf")),
        await backyWrapper(dir),
      );
      assertEquals(r.code, 3);
      assertMatch(r.out, /^UNKNOWN: .*missing\.conf: cannot read config/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const icinga2 = isRoot() && await has("icinga2", ["--version"]);

Deno.test({
  name: `Icinga 2 definitions pass icinga2 daemon -C${
    icinga2 ? "" : " (ignored: needs root and icinga2, Debian package icinga2-bin)"
  }`,
  ignore: !icinga2,
  fn: async () => {
    const dir = await tempDir();
    try {
      const main = join(dir, "icinga2.conf");
      await Deno.writeTextFile(
        main,
        `include "${join(CONTRIB, "icinga2/backy.conf")}"\n` +
          `object Host "backup01" {\n  check_command = "backy"\n  vars.backy = true\n}\n`,
      );
      // icinga2 reads its configuration as its own user (nagios/icinga), not as root.
      await Deno.chmod(dir, 0o755);
      await Deno.chmod(main, 0o644);
      const r = await sh("icinga2", ["daemon", "-C", "-c", main]);
      assertEquals(r.code, 0, r.out + r.err);
      // The apply rule matched the host: one Service, and the CheckCommand loaded.
      assertIncludes(r.out, "Instantiated 1 Service.");
      assertIncludes(r.out, "Instantiated 1 CheckCommand.");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
