#!/usr/bin/env python3
"""Fails when a log line written by the test suite's runs carries a
personal field of the Stripe fixtures the tests send (an email, a name, a
phone number, an address line).

CloudWatch Logs is the one store `hookline erase` cannot reach, so no log
line may carry one (docs/data.md). `make test` runs this after the tests,
over every log the binaries under test wrote (target/test-logs/) and the
test output itself (target/test-output.log).

    scripts/scan_logs.py [LOG_DIR_OR_FILE ...]
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The fixtures whose events the tests send: Stripe-shaped events, and
# Stripe's own published objects.
FIXTURES = [ROOT / "testdata" / "stripe-events", ROOT / "testdata" / "stripe-openapi"]
# Keys whose string values are personal data in Stripe's objects.
PERSONAL_KEYS = {
    "email", "receipt_email", "support_email", "name", "first_name", "last_name",
    "phone", "support_phone", "line1", "line2", "postal_code", "city",
}


def personal_values(value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            # A placeholder such as "name": "name" is no one's data.
            if k in PERSONAL_KEYS and isinstance(v, str) and len(v) >= 6 and v not in PERSONAL_KEYS:
                out.add(v)
            personal_values(v, out)
    elif isinstance(value, list):
        for v in value:
            personal_values(v, out)
    return out


def scan(files, values, root, show=True):
    """(lines read, hits), printing the first hits."""
    lines = hits = 0
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                lines += 1
                for v in values:
                    if v in line:
                        hits += 1
                        if show and hits <= 20:
                            name = f.relative_to(root) if f.is_relative_to(root) else f
                            print(f"{name}:{n}: carries the fixture's personal field {v!r}")
    return lines, hits


def self_test(values):
    """A line with a fixture's email must be found, and a clean one not."""
    import tempfile
    email = sorted(v for v in values if "@" in v)[0]
    with tempfile.TemporaryDirectory() as d:
        dirty = pathlib.Path(d) / "dirty.log"
        dirty.write_text('{"level":"WARN","fields":{"receipt_email":"%s"}}\n' % email)
        clean = pathlib.Path(d) / "clean.log"
        clean.write_text('{"level":"INFO","fields":{"event_id":"evt_1"}}\n')
        if scan([dirty], values, pathlib.Path(d), False)[1] != 1 or scan([clean], values, pathlib.Path(d), False)[1] != 0:
            print("scan_logs: the self-test failed", file=sys.stderr)
            return False
    return True


def main(args):
    values = set()
    for d in FIXTURES:
        for f in sorted(d.glob("*.json")):
            personal_values(json.loads(f.read_text()), values)
    if not any("@" in v for v in values):
        print("scan_logs: no personal field found in the fixtures", file=sys.stderr)
        return 1
    if not self_test(values):
        return 1
    targets = [pathlib.Path(a) for a in args] or [ROOT / "target" / "test-logs",
                                                   ROOT / "target" / "test-output.log"]
    files = []
    for t in targets:
        if t.is_dir():
            files.extend(sorted(p for p in t.rglob("*") if p.is_file()))
        elif t.is_file():
            files.append(t)
    lines, hits = scan(files, values, ROOT)
    print(f"scan_logs: {len(files)} log files, {lines} lines, "
          f"{len(values)} personal values from the fixtures, {hits} hits")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
