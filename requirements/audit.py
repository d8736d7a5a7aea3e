"""Audit every pin of the hashed locks with pip-audit (run by `make test` and `make audit`).

Policy (README, "Dependencies and locks"):
- the vulnerability service cannot be reached (offline, timeout, or it answers for no package):
  print one line saying the audit was skipped, exit 0;
- vulnerabilities with a fixed release: print them and exit 1 (0 with --warn-only): run
  `make lock LOCK_FLAGS="--upgrade-package NAME"`, or pass --ignore ID with a reason in the Makefile;
- vulnerabilities without any fix: print them as warnings, exit 0 (nothing to upgrade to).

The locks are universal (some packages have one pin per Python version) and torch carries the
"+cpu" local label, so the pins are audited as plain `name==public-version` lines, split into
rounds so that no package appears twice in one pip-audit run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\+]+)(?:\+\S*)?")


def read_pins(locks: list[str]) -> list[tuple[str, str]]:
    pins: list[tuple[str, str]] = []
    for lock in locks:
        for line in Path(lock).read_text(encoding="utf-8").splitlines():
            m = PIN.match(line)
            if m:
                pin = (m.group(1).lower().replace("_", "-"), m.group(2))
                if pin not in pins:
                    pins.append(pin)
    return pins


def rounds(pins: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for name, version in pins:
        for bucket in out:
            if all(n != name for n, _ in bucket):
                bucket.append((name, version))
                break
        else:
            out.append([(name, version)])
    return out


def run_pip_audit(pins, args, deadline: float) -> dict | str:
    """The pip-audit JSON report, or a one-line reason why there is none."""
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp, "pins.txt")
        req.write_text("".join(f"{n}=={v}\n" for n, v in pins), encoding="utf-8")
        out = Path(tmp, "report.json")
        cmd = [str(Path(sys.executable).with_name("pip-audit")), "--disable-pip", "--no-deps",
               "-r", str(req), "--progress-spinner", "off", "--timeout", str(args.request_timeout),
               "--vulnerability-service", args.service, "--format", "json", "--output", str(out)]
        for vuln in args.ignore:
            cmd += ["--ignore-vuln", vuln]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"no answer within {args.timeout:g} s"
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=remaining)
        except subprocess.TimeoutExpired:
            return f"no answer within {args.timeout:g} s"
        try:
            return json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            return (lines[-1] if lines else f"pip-audit exited with {proc.returncode}")[:200]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("locks", nargs="+")
    ap.add_argument("--warn-only", action="store_true", help="never fail, only print")
    ap.add_argument("--ignore", action="append", default=[], metavar="ID",
                    help="vulnerability id (PYSEC-/GHSA-/CVE-) to ignore; repeatable")
    ap.add_argument("--service", default="pypi", choices=["pypi", "osv"])
    ap.add_argument("--timeout", type=float, default=120, help="whole audit, seconds")
    ap.add_argument("--request-timeout", type=int, default=15, help="each request, seconds")
    args = ap.parse_args()
    args.ignore = [i for item in args.ignore for i in item.split()]

    pins = read_pins(args.locks)
    deadline = time.monotonic() + args.timeout
    deps: list[dict] = []
    for bucket in rounds(pins):
        report = run_pip_audit(bucket, args, deadline)
        if isinstance(report, str):
            print(f"pip-audit: skipped, the vulnerability service could not be reached ({report})")
            return 0
        deps += report.get("dependencies", [])

    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        print(f"pip-audit: skipped, the vulnerability service ({args.service}) answered for none "
              f"of the {len(pins)} pins (offline or blocked)")
        return 0
    fixable, unfixable = [], []
    for dep in audited:
        for vuln in dep.get("vulns", []):
            (fixable if vuln.get("fix_versions") else unfixable).append((dep, vuln))
    for label, found in (("FIX AVAILABLE", fixable), ("no fix yet", unfixable)):
        for dep, vuln in found:
            fix = ", ".join(vuln.get("fix_versions") or []) or "-"
            aliases = ", ".join(vuln.get("aliases") or [])
            desc = " ".join((vuln.get("description") or "").split())[:160]
            print(f"pip-audit: {label}: {dep['name']} {dep['version']} {vuln['id']}"
                  f"{f' ({aliases})' if aliases else ''} fixed in: {fix}. {desc}")
    unaudited = sorted(d["name"] for d in deps if "skip_reason" in d)
    summary = (f"pip-audit: {len(audited)} of {len(pins)} pins audited, {len(fixable)} fixable and "
               f"{len(unfixable)} unfixable vulnerabilities")
    if unaudited:
        more = f" and {len(unaudited) - 10} more" if len(unaudited) > 10 else ""
        summary += f"; not found by the service: {', '.join(unaudited[:10])}{more}"
    print(summary)
    if fixable and not args.warn_only:
        print("pip-audit: failing: upgrade with `make lock LOCK_FLAGS=\"--upgrade-package NAME\"`, "
              "or ignore with AUDIT_IGNORE=ID (say why in the commit)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
