"""What an operator reads of a running directd under systemd: the journal's audit
fields (issue 20: `journalctl -u directd DIRECTD_CLIENT=...`) and `directd status`
over the control socket in the unit's RuntimeDirectory."""

import json

from clients import echoes

CLIENT = "127.0.0.9"   # a loopback address of its own, so the field match means something


def journal_entries(op, *matches):
    return [json.loads(line) for line in op.journal("-o", "json", *matches).splitlines() if line.strip()]


def check_journal_audit_fields(box, op, check, port, wait_for):
    """A session from 127.0.0.9: `journalctl -u directd DIRECTD_CLIENT=127.0.0.9` finds its opened and closed entries."""
    payload = b"audit me\n"
    sock = box.socket()
    sock.settimeout(3)
    sock.bind((CLIENT, 0))
    sock.connect(("127.0.0.1", port))
    echoed = echoes(sock, payload)
    client_port = sock.getsockname()[1]
    sock.close()

    def events():
        entries = journal_entries(op, f"DIRECTD_CLIENT={CLIENT}", f"DIRECTD_CLIENT_PORT={client_port}")
        return {e.get("DIRECTD_EVENT"): e for e in entries}
    found = wait_for(lambda: {"opened", "closed"} <= set(events()), 10) and events()
    closed = (found or {}).get("closed", {})
    opened = (found or {}).get("opened", {})
    check(echoed and found and opened.get("DIRECTD_LISTENER") == f"127.0.0.1:{port}"
          and closed.get("DIRECTD_BYTES_IN") == str(len(payload)) and closed.get("DIRECTD_BYTES_OUT") == str(len(payload))
          and "DIRECTD_DURATION" in closed and str(opened.get("MESSAGE", "")).startswith("#"),
          "journal: DIRECTD_CLIENT=127.0.0.9 finds the session's opened and closed entries with their fields",
          f"echoed {echoed}; opened {sorted(k for k in opened if k.startswith('DIRECTD_'))}; "
          f"closed bytes {closed.get('DIRECTD_BYTES_IN')}/{closed.get('DIRECTD_BYTES_OUT')}, "
          f"duration {closed.get('DIRECTD_DURATION')}; message {str(opened.get('MESSAGE', ''))[:80]!r}")
    others = journal_entries(op, "DIRECTD_CLIENT=127.0.0.1")
    check(all(e.get("DIRECTD_CLIENT") == "127.0.0.1" for e in others),
          "journal: a field match keeps other clients' sessions out", f"{len(others)} entries for 127.0.0.1")


def check_status_command(box, op, check, port):
    """`directd status` (text and --json) reads the running instance at /run/directd/control.sock."""
    pid = op.main_pid()
    text = box.run("directd", "status", check=False)
    raw = box.run("directd", "status", "--json", check=False)
    try:
        report = json.loads(raw.stdout)
    except ValueError:
        report = {}
    check(text.returncode == 0 and f"pid {pid}," in text.stdout and f"127.0.0.1:{port}" in text.stdout
          and raw.returncode == 0 and report.get("pid") == pid,
          "directd status reads the running service over /run/directd/control.sock (text and JSON)",
          f"exit {text.returncode}/{raw.returncode}; {text.stdout.splitlines()[:3]}; json pid {report.get('pid')} "
          f"(MainPID {pid}){text.stderr[-300:]}")
