#!/usr/bin/env python3
"""Puts real bugs back into aima, one at a time, and checks that the scenario criterion
written against each one fails; then restores the source and checks the feature passes.

    python3 harness/planted_bugs.py            # every bug (about 4 minutes)
    python3 harness/planted_bugs.py 3 5        # only bugs 3 and 5

Each bug is one change to one file. The script builds aima (debug) with the bug, runs the
feature with the harness binary built from the clean tree, and prints a Markdown row per
bug: the change, the criterion, and the verdict it got. It exits non-zero when a criterion
passed with its bug in place (a blind spot) or the clean tree fails.
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (file, source text, the bug, feature, criterion number, what the bug is[, (more source, more bug)])
BUGS = [
    (
        "aima/src/daemon/lifecycle.rs",
        "        let daemon = self.clone();\n        // Its own task: a client that hangs up",
        "        let daemon = self.clone();\n        let (again, this) = (self.clone(), id.clone());\n        // Its own task: a client that hangs up",
        "scenario-06", "6",
        "service stop returns at once while the stop goes on in the background",
        ("        tokio::spawn(async move {\n            let lock = daemon.cancel_start_and_lock(&id).await;\n            let _guard = lock.lock().await;\n            let mut service = daemon.load_service(&id).await?;\n            daemon.stop_locked(&mut service, reason).await?;\n            Ok(service)\n        })\n        .await\n        .map_err(|e| DaemonError::Unavailable(format!(\"the stop task failed: {e}\")))?\n",
         "        drop(tokio::spawn(async move {\n            let lock = daemon.cancel_start_and_lock(&id).await;\n            let _guard = lock.lock().await;\n            let mut service = daemon.load_service(&id).await?;\n            daemon.stop_locked(&mut service, reason).await?;\n            Ok::<Service, DaemonError>(service)\n        }));\n        again.load_service(&this).await\n"),
    ),
    (
        "aima/src/runtime/docker.rs",
        "                // Never a restart policy: AIMA decides what runs, and a crash must be seen.\n",
        "                restart_policy: Some(bollard::models::RestartPolicy { name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED), maximum_retry_count: None }),\n",
        "scenario-06", "7",
        "containers get Docker's restart policy unless-stopped",
    ),
    (
        "aima/src/runtime/docker.rs",
        'format!("{host}:{container}:ro")',
        'format!("{host}:{container}:rw")',
        "scenario-06", "7",
        "the model directory is mounted writable",
    ),
    (
        "aima/src/daemon/lifecycle.rs",
        "            return Err(LaunchError::Fatal(port_conflict(service.port, &holder)));\n        }\n\n        publish(\n            StartPhase::Image,",
        "            return Err(LaunchError::Runtime(RuntimeError::Transient(port_conflict(service.port, &holder))));\n        }\n\n        publish(\n            StartPhase::Image,",
        "scenario-20", "1",
        "a foreign port holder is retried with short pauses (still fails in time)",
    ),
    (
        "aima/src/daemon/lifecycle.rs",
        "                    other => Err(other.into()),",
        "                    other => Err(LaunchError::Fatal(other.to_string())),",
        "scenario-20", "8",
        "a transient refusal of the container start is not retried",
    ),
    (
        "aima/src/runtime/mod.rs",
        "            Self::Transient(_) | Self::Timeout { .. } => true,",
        "            Self::Transient(_) | Self::Timeout { .. } | Self::Failed(_) => true,",
        "scenario-20", "9",
        "permanent Docker errors are retried as if transient",
    ),
    (
        "aima/src/daemon/reconcile.rs",
        "            ServiceStatus::Running | ServiceStatus::Starting => {",
        "            ServiceStatus::Running => {",
        "scenario-20", "10",
        "reconciliation treats an interrupted start like a stopped service (left starting)",
        ("            ServiceStatus::Creating | ServiceStatus::Stopped | ServiceStatus::Failed => {",
         "            ServiceStatus::Creating | ServiceStatus::Stopped | ServiceStatus::Failed | ServiceStatus::Starting => {"),
    ),
    (
        "aima/src/daemon/lifecycle.rs",
        "                // A failed start leaves no container behind.\n                self.clean_up_or_retry(&service).await;\n",
        "                // A failed start leaves no container behind.\n",
        "scenario-18", "9",
        "a start that fails in its health phase keeps the dead container",
    ),
    (
        "aima/src/daemon/services.rs",
        "        match self.own_container(&service).await {\n            Ok(Some(container)) => {\n                let mut live",
        "        match self.runtime().list(&self.instance_labels()).await.map(|c| c.into_iter().next()) {\n            Ok(Some(container)) => {\n                let mut live",
        "scenario-18", "10",
        "logs are read from the instance's first container, not the service's",
    ),
    (
        "aima/src/store/services.rs",
        "WHERE seq > ?1 AND (?2 IS NULL OR service_id = ?2) ORDER BY seq",
        "WHERE seq > ?1 AND (?2 IS NULL OR service_id = ?2 OR 1) ORDER BY seq",
        "scenario-18", "10",
        "a service's events include every service's events",
    ),
]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kw)


def build_aima():
    out = run(["cargo", "build", "-q", "-p", "aima", "--bin", "aima"])
    if out.returncode != 0:
        sys.exit(f"building aima failed:\n{out.stderr}")


def verdicts(feature, report):
    """Runs a feature with the built aima; returns {criterion number: (verdict, reason)}."""
    out = run([
        str(ROOT / "target/debug/harness"), "run", feature,
        "--aima", str(ROOT / "target/debug/aima"),
        "--report-dir", report,
    ])
    found = {}
    lines = out.stdout.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^  (PASS|FAIL)\s+(\d+[a-z]?)\. ", line)
        if m:
            reason = ""
            if m.group(1) == "FAIL" and i + 1 < len(lines):
                reason = lines[i + 1].strip().removeprefix("reason: ")
            found[m.group(2)] = (m.group(1), reason)
    return found


def main():
    chosen = {int(a) for a in sys.argv[1:]} or set(range(1, len(BUGS) + 1))
    build = run(["cargo", "build", "-q", "-p", "harness", "--bin", "harness", "--bin", "aima-stub-engine"])
    if build.returncode != 0:
        sys.exit(f"building the harness failed:\n{build.stderr}")
    blind = 0
    print("| # | bug put back | file | criterion | verdict |")
    print("|---|---|---|---|---|")
    for n, (file, good, bad, feature, criterion, what, *more) in enumerate(BUGS, 1):
        if n not in chosen:
            continue
        path = ROOT / file
        source = path.read_text()
        buggy = source
        # A bug may need a second change in the same file.
        for old, new in [(good, bad), *more]:
            if buggy.count(old) != 1:
                sys.exit(f"bug {n}: the text to change is not found once in {file}; update planted_bugs.py")
            buggy = buggy.replace(old, new)
        try:
            path.write_text(buggy)
            build_aima()
            verdict, reason = verdicts(feature, f"/tmp/planted-bug-{n}").get(criterion, ("MISSING", ""))
        finally:
            path.write_text(source)
        if verdict != "FAIL":
            blind += 1
        print(f"| {n} | {what} | `{file}` | {feature} {criterion} | {verdict} {reason[:160]} |", flush=True)
    build_aima()
    clean_failures = 0
    for feature in sorted({BUGS[n - 1][3] for n in chosen}):
        failed = [c for c, (v, _) in verdicts(feature, f"/tmp/planted-clean-{feature}").items() if v != "PASS"]
        print(f"clean tree, {feature}: {'all pass' if not failed else 'FAILED ' + ', '.join(failed)}")
        clean_failures += len(failed)
    if blind or clean_failures:
        sys.exit(f"{blind} criteria passed with their bug in place; {clean_failures} failed on the clean tree")


if __name__ == "__main__":
    main()
