# ruff: noqa: E501  (the cases' shell commands read better on one line each)
"""Regenerate the diagnosis corpus: real failure output, captured on a real VM.

Every case below is a command that fails the way LLM-written code fails on Debian
servers. This script brings up one node with antrieb's own :class:`~antrieb.Cluster`,
installs the services once (through the cluster's apt proxy), runs each case the way
the engine runs it (a step: the script file under ``bash``, through the same timing
wrapper as :mod:`antrieb.converge.apply`; a check: :func:`antrieb.converge.checks.run_check`)
and writes ``cases/<name>.yaml``: the command, what it produced (exit status, stdout,
stderr, seconds), the class it should get and the line that should decide it.

Nothing in ``cases/`` is written by hand; the unit test
(``tests/unit/converge/test_corpus.py``) runs every file through the classifier.

Usage (about 10 minutes under TCG, most of it apt)::

    .venv/bin/python tests/unit/converge/corpus/regenerate.py            # all cases
    .venv/bin/python tests/unit/converge/corpus/regenerate.py redis sshd # names containing
    .venv/bin/python tests/unit/converge/corpus/regenerate.py --relabel  # no VM: rewrite
        # each file's expected class and evidence from CASES, keeping its captured output
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
CASES_DIR = HERE / "cases"

PACKAGES = ("redis-server bind9 bind9-utils postfix mariadb-server apache2 chrony ufw "
            "iptables cron postgresql ansible-core")

# name, service, kind (step|check), command, class, evidence (a substring of the line
# that must decide it); optional: cleanup (run after), timeout, expect (check), host,
# fault ("STATUS COUNT" for the apt proxy, see antrieb.vm.net.aptfault).
CASES: list[dict[str, Any]] = [
    # -- sshd ---------------------------------------------------------------------
    dict(name="sshd-t-bad-option", service="sshd", cls="config_syntax",
         evidence="Bad configuration option: PermitRootLogn",
         command="printf 'PermitRootLogn yes\\n' > /etc/ssh/sshd_config.d/10-root.conf\n"
                 "sshd -t",
         cleanup="rm -f /etc/ssh/sshd_config.d/10-root.conf"),
    dict(name="sshd-t-bad-value", service="sshd", cls="config_syntax",
         evidence="unsupported option",
         command="printf 'PasswordAuthentication maybe\\n' > /tmp/sshd_test.conf\n"
                 "/usr/sbin/sshd -t -f /tmp/sshd_test.conf"),
    dict(name="sshd-restart-broken-config", service="sshd", cls="config_syntax",
         evidence="Bad configuration option: ListenAdress",
         command="printf 'ListenAdress 0.0.0.0\\n' > /etc/ssh/sshd_config.d/20-listen.conf\n"
                 "sshd -t && systemctl restart ssh",
         cleanup="rm -f /etc/ssh/sshd_config.d/20-listen.conf"),
    # -- systemd ------------------------------------------------------------------
    dict(name="systemctl-restart-unknown-unit", service="systemd", cls="missing_command",
         evidence="Unit nosuchd.service not found",
         command="systemctl restart nosuchd"),
    dict(name="systemctl-enable-missing-unit-file", service="systemd", cls="missing_command",
         evidence="does not exist", command="systemctl enable --now myapp.service"),
    dict(name="systemctl-status-unknown", service="systemd", cls="missing_command",
         evidence="could not be found", command="systemctl status webapp --no-pager"),
    dict(name="systemd-unit-exec-fails", service="systemd", cls="service_failed",
         evidence="Job for worker.service failed",
         command="printf '[Unit]\\nDescription=worker\\n[Service]\\nType=oneshot\\nExecStart=/bin/false\\n"
                 "[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/worker.service\n"
                 "systemctl daemon-reload\nsystemctl start worker",
         cleanup="rm -f /etc/systemd/system/worker.service; systemctl daemon-reload"),
    dict(name="systemd-unit-relative-exec", service="systemd", cls="config_syntax",
         evidence="bad unit file setting",
         command="printf '[Service]\\nUser=app\\nRestart=always\\n' > /etc/systemd/system/rel.service\n"
                 "systemctl daemon-reload\nsystemctl start rel",
         cleanup="rm -f /etc/systemd/system/rel.service; systemctl daemon-reload"),
    # -- bash ---------------------------------------------------------------------
    dict(name="bash-unbound-variable", service="bash", cls="script_error",
         evidence="APP_PORT: unbound variable",
         command="set -euo pipefail\necho \"listening on ${APP_PORT}\""),
    dict(name="bash-command-not-found", service="bash", cls="missing_command",
         evidence="git: command not found",
         command="git clone https://github.com/example/app /opt/app"),
    dict(name="bash-missing-fi", service="bash", cls="script_error",
         evidence="syntax error: unexpected end of file",
         command="if [ -d /etc/app ]; then\n  echo present\n"),
    dict(name="bash-silent-false", service="bash", cls="unknown", evidence=None,
         command="set -e\ngrep -q '^appuser:' /etc/passwd"),
    dict(name="bash-useradd-twice", service="bash", cls="unknown", evidence=None,
         command="useradd deploy\nuseradd deploy",
         cleanup="userdel deploy"),
    # -- apt / dpkg ---------------------------------------------------------------
    dict(name="apt-misnamed-package", service="apt", cls="missing_package",
         evidence="Unable to locate package nginx-ful",
         command="apt-get install -y nginx-ful"),
    dict(name="apt-no-candidate", service="apt", cls="missing_package",
         evidence="mysql-server", command="apt-get install -y mysql-server"),
    dict(name="apt-third-party-package", service="apt", cls="missing_package",
         evidence="Package 'docker-ce' has no installation candidate",
         command="apt-get install -y docker-ce docker-ce-cli containerd.io"),
    dict(name="dpkg-missing-archive", service="dpkg", cls="missing_package",
         evidence="cannot access archive",
         command="dpkg -i /tmp/google-chrome-stable_current_amd64.deb"),
    dict(name="apt-third-party-repo", service="apt", cls="egress_blocked",
         evidence="download.docker.com",
         command="echo 'deb [trusted=yes] https://download.docker.com/linux/debian bookworm stable'"
                 " > /etc/apt/sources.list.d/docker.list\napt-get update\napt-get install -y docker-ce",
         cleanup="rm -f /etc/apt/sources.list.d/docker.list"),
    dict(name="apt-third-party-repo-http", service="apt", cls="egress_blocked",
         evidence="repo.mongodb.org",
         command="echo 'deb [trusted=yes] http://repo.mongodb.org/apt/debian bookworm/mongodb-org/7.0"
                 " main' > /etc/apt/sources.list.d/mongodb.list\napt-get update",
         cleanup="rm -f /etc/apt/sources.list.d/mongodb.list"),
    dict(name="apt-update-mirror-502", service="apt", cls="infrastructure",
         evidence="502", fault="502 40",
         command="apt-get update\napt-get install -y --no-install-recommends tree"),
    dict(name="apt-install-mirror-503", service="apt", cls="infrastructure",
         evidence="503", fault="503 40",
         command="apt-get install -y --no-install-recommends tree"),
    # -- curl | sh, python, the internet -------------------------------------------
    dict(name="curl-pipe-sh", service="curl", cls="egress_blocked",
         evidence="Could not resolve host: get.docker.com",
         command="set -o pipefail\ncurl -fsSL https://get.docker.com | sh"),
    dict(name="curl-gpg-key", service="curl", cls="egress_blocked",
         evidence="packages.sury.org",
         command="curl -fsSL https://packages.sury.org/php/apt.gpg -o /usr/share/keyrings/sury.gpg"),
    dict(name="python-urlopen-pypi", service="python", cls="egress_blocked",
         evidence="name resolution",
         command="python3 -c 'import urllib.request; urllib.request.urlopen(\"https://pypi.org/simple/\")'"),
    dict(name="python-missing-module", service="python", cls="missing_package",
         evidence="No module named 'flask'", command="python3 -c 'import flask'"),
    dict(name="python-nameerror", service="python", cls="script_error",
         evidence="NameError",
         command="printf 'port = 8080\\nprint(\"serving on\", prot)\\n' > /tmp/app.py\npython3 /tmp/app.py"),
    dict(name="pip-missing", service="python", cls="missing_command",
         evidence="No module named pip", command="python3 -m pip install flask"),
    # -- redis --------------------------------------------------------------------
    dict(name="redis-bad-directive", service="redis", cls="config_syntax",
         evidence="FATAL CONFIG FILE ERROR",
         command="printf 'maxmemory-polcy allkeys-lru\\n' > /tmp/redis.conf\nredis-server /tmp/redis.conf"),
    dict(name="redis-restart-broken-config", service="redis", cls="service_failed",
         evidence="Job for redis-server.service failed",
         command="cp /etc/redis/redis.conf /tmp/redis.conf.orig\n"
                 "echo 'bind 0.0.0.0 ::1 extra-arg-oops yes no' >> /etc/redis/redis.conf\n"
                 "echo 'requirepass' >> /etc/redis/redis.conf\nsystemctl restart redis-server",
         cleanup="cp /tmp/redis.conf.orig /etc/redis/redis.conf; systemctl reset-failed redis-server;"
                 " systemctl restart redis-server"),
    dict(name="redis-cli-refused", service="redis", kind="check", cls="connectivity",
         evidence="Connection refused", command="redis-cli -p 6390 ping",
         expect={"stdout_regex": ["PONG"]}),
    dict(name="redis-auth-required", service="redis", kind="check", cls="permission",
         evidence="NOAUTH",
         command="redis-cli config set requirepass s3cret >/dev/null; redis-cli set k v;"
                 " rc=$?; redis-cli -a s3cret --no-auth-warning config set requirepass '' >/dev/null;"
                 " exit $rc",
         expect={"stdout_regex": ["^OK"]}),
    # -- bind9 --------------------------------------------------------------------
    dict(name="named-checkconf-missing-semicolon", service="bind9", cls="config_syntax",
         evidence="missing ';'",
         command="printf 'options {\\n  directory \"/var/cache/bind\"\\n};\\n' > /tmp/named.conf\n"
                 "named-checkconf /tmp/named.conf"),
    dict(name="named-checkzone-no-ns", service="bind9", cls="config_syntax",
         evidence="has no NS records",
         command="printf '$TTL 3600\\n@ IN SOA ns1.example.com. admin.example.com. 1 3600 600 "
                 "86400 3600\\nwww IN A 10.0.0.5\\n' > /tmp/db.example\n"
                 "named-checkzone example.com /tmp/db.example"),
    dict(name="bind9-restart-bad-zone-file", service="bind9", cls="config_syntax",
         evidence="unknown option",
         command="cp /etc/bind/named.conf.local /tmp/ncl.orig\n"
                 "printf 'zone \"example.com\" {\\n type master;\\n fille \"/etc/bind/db.example\";\\n};\\n'"
                 " >> /etc/bind/named.conf.local\nnamed-checkconf && systemctl restart named",
         cleanup="cp /tmp/ncl.orig /etc/bind/named.conf.local"),
    # -- postfix ------------------------------------------------------------------
    dict(name="postmap-missing-file", service="postfix", cls="unknown", evidence=None,
         command="postmap /etc/postfix/sasl_passwd"),
    dict(name="postfix-check-bad-master", service="postfix", cls="config_syntax",
         evidence="master.cf",
         command="cp /etc/postfix/master.cf /tmp/master.cf.orig\n"
                 "echo 'submission inet n - y - - smtpd -o' >> /etc/postfix/master.cf\n"
                 "echo 'badline' >> /etc/postfix/master.cf\npostfix check",
         cleanup="cp /tmp/master.cf.orig /etc/postfix/master.cf"),
    # -- sudo ---------------------------------------------------------------------
    dict(name="visudo-syntax", service="sudo", cls="config_syntax", evidence="syntax error",
         command="printf 'deploy ALL=(ALL) NOPASSWD ALL\\n' > /tmp/deploy.sudoers\n"
                 "visudo -cf /tmp/deploy.sudoers"),
    dict(name="sudo-nobody-shadow", service="sudo", cls="permission",
         evidence="/etc/shadow: Permission denied", command="sudo -u nobody cat /etc/shadow"),
    dict(name="sudo-unknown-user", service="sudo", cls="unknown", evidence=None,
         command="sudo -u appuser /usr/bin/id"),
    # -- cron ---------------------------------------------------------------------
    dict(name="crontab-bad-field", service="cron", cls="config_syntax",
         evidence="bad day-of-week",
         command="printf '*/5 * * * root /usr/local/bin/backup.sh\\n' | crontab -"),
    # -- mariadb ------------------------------------------------------------------
    dict(name="mysql-access-denied", service="mariadb", cls="permission",
         evidence="Access denied for user",
         command="mysql -u app -pwrong -e 'select 1'"),
    dict(name="mysql-sql-syntax", service="mariadb", cls="config_syntax",
         evidence="error in your SQL syntax",
         command="mysql -e \"CREATE USER 'app'@'%' IDENTIFIED BY 'pw' WITH GRANT;\""),
    dict(name="mysql-unknown-database", service="mariadb", cls="unknown", evidence=None,
         command="mysql appdb -e 'select 1'"),
    dict(name="mysql-cannot-connect", service="mariadb", kind="check", cls="connectivity",
         evidence="Can't connect to server on '127.0.0.1'",
         command="mysql -h 127.0.0.1 -P 3307 -e 'select 1'", expect={}),
    # -- apache2 ------------------------------------------------------------------
    dict(name="apachectl-configtest-bad-directive", service="apache2", cls="config_syntax",
         evidence="Syntax error on line 1 of /etc/apache2/conf-enabled/name.conf",
         command="echo 'ServerNmae example.com' > /etc/apache2/conf-enabled/name.conf\n"
                 "apachectl configtest",
         cleanup="rm -f /etc/apache2/conf-enabled/name.conf"),
    dict(name="a2enmod-unknown", service="apache2", cls="missing_command",
         evidence="Module php8.2 does not exist", command="a2enmod php8.2"),
    dict(name="apache-port-in-use", service="apache2", cls="service_failed",
         evidence="Job for apache2.service failed",
         command="systemctl stop apache2\n"
                 "(python3 -m http.server 80 >/dev/null 2>&1 &)\nsleep 2\nsystemctl start apache2",
         cleanup="pkill -f 'http.server 80'; systemctl reset-failed apache2; systemctl start apache2"),
    dict(name="apache-wrong-content", service="apache2", kind="check", cls="check_mismatch",
         evidence=None, before="systemctl restart apache2; sleep 1",
         command="curl -s http://localhost/", expect={"stdout_regex": ["^hello$"]}),
    dict(name="curl-nothing-listens", service="curl", kind="check", cls="connectivity",
         evidence="Failed to connect", command="curl -sS http://localhost:8080/",
         expect={"stdout_regex": ["ok"]}),
    dict(name="curl-internet-check", service="curl", kind="check", cls="egress_blocked",
         evidence="Could not resolve host: example.com",
         command="curl -sS https://example.com/", expect={}),
    # -- chrony -------------------------------------------------------------------
    dict(name="chronyd-bad-directive", service="chrony", cls="config_syntax",
         evidence="Invalid directive",
         command="printf 'serverr pool.ntp.org iburst\\n' > /tmp/chrony.conf\n"
                 "chronyd -p -f /tmp/chrony.conf"),
    dict(name="chrony-stopped", service="chrony", kind="check", cls="service_failed",
         evidence="service chrony is not running", before="systemctl stop chrony",
         host={"kind": "service_running", "service": "chrony"}, command=None,
         cleanup="systemctl start chrony"),
    # -- ufw / iptables / nft -----------------------------------------------------
    dict(name="ufw-bad-port", service="ufw", cls="config_syntax", evidence="Bad port",
         command="ufw allow 99999/tcp"),
    dict(name="iptables-bad-target", service="iptables", cls="config_syntax",
         evidence="ACCPET", command="iptables -A INPUT -p tcp --dport 80 -j ACCPET"),
    dict(name="iptables-restore-bad-line", service="iptables", cls="config_syntax",
         evidence='unknown option "--bogus"',
         command="printf '*filter\\n:INPUT ACCEPT [0:0]\\n-A INPUT -p tcp --dport ssh -j ACCEPT --bogus\\n"
                 "COMMIT\\n' > /tmp/rules.v4\niptables-restore < /tmp/rules.v4"),
    dict(name="nft-check-syntax", service="nftables", cls="config_syntax",
         evidence="syntax error",
         command="printf 'table inet filter {\\n chain input {\\n  type filter hook input priority 0\\n"
                 "  tcp dport 22 acept\\n }\\n}\\n' > /tmp/fw.nft\nnft -c -f /tmp/fw.nft"),
    # -- postgresql (curated service, real output of its harmless runuser line) ----
    dict(name="psql-empty-result-runuser-cwd", service="postgresql", kind="check",
         cls="check_mismatch", evidence=None,
         command="runuser -u postgres -- psql -tAc \"select 1 from pg_roles where rolname='replicator'\"",
         expect={"stdout_regex": ["^1$"]}),
    dict(name="psql-role-missing", service="postgresql", cls="unknown", evidence=None,
         command="runuser -u postgres -- psql -c 'GRANT ALL ON DATABASE postgres TO app'"),
    # -- ansible ------------------------------------------------------------------
    dict(name="ansible-undefined-variable", service="ansible", cls="script_error",
         evidence="is undefined",
         command="printf -- '- hosts: localhost\\n  connection: local\\n  gather_facts: false\\n"
                 "  tasks:\\n    - copy:\\n        dest: /tmp/x.conf\\n        content: \"port={{ app_port }}\"\\n'"
                 " > /tmp/site.yml\nansible-playbook /tmp/site.yml"),
    dict(name="ansible-unknown-module", service="ansible", cls="missing_command",
         evidence="couldn't resolve module/action",
         command="printf -- '- hosts: localhost\\n  connection: local\\n  gather_facts: false\\n"
                 "  tasks:\\n    - acme.webtools.site_deploy:\\n        name: web\\n'"
                 " > /tmp/site.yml\nansible-playbook /tmp/site.yml"),
    dict(name="ansible-yaml-error", service="ansible", cls="config_syntax",
         evidence="Syntax Error while loading YAML",
         command="printf -- '- hosts: localhost\\n  tasks:\\n  - name: x\\n    apt: name=nginx\\n"
                 "     state: present\\n' > /tmp/site.yml\nansible-playbook /tmp/site.yml"),
    # -- platform: a step that outlives its timeout ----------------------------------
    dict(name="step-hangs", service="bash", cls="timeout", evidence="timed out",
         command="echo waiting for db\nwhile ! getent hosts db-primary >/dev/null; do sleep 1; done",
         timeout=8),
]


def _dump(case: dict[str, Any], captured: dict[str, Any]) -> None:
    out = {"name": case["name"], "service": case["service"], "kind": case.get("kind", "step"),
           "command": case["command"], "failure_class": case["cls"],
           "evidence": case["evidence"], **captured}
    for key in ("expect", "host", "fault"):
        if case.get(key) is not None:
            out[key] = case[key]
    CASES_DIR.mkdir(parents=True, exist_ok=True)
    path = CASES_DIR / f"{case['name']}.yaml"
    header = ("# Captured by tests/unit/converge/corpus/regenerate.py on a real VM "
              f"({time.strftime('%Y-%m-%d')}); do not edit by hand.\n")
    path.write_text(header + yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=100))


def _run_case(node: Any, case: dict[str, Any], fault_file: Path) -> dict[str, Any]:
    from antrieb.converge.apply import WORKDIR, _run_step
    from antrieb.converge.checks import run_check
    from antrieb.converge.models import Check

    if case.get("before"):
        node.run(case["before"], timeout=120)
    if case.get("fault"):
        fault_file.write_text(case["fault"])
    try:
        if case.get("kind", "step") == "check":
            check = Check(name=case["name"], node=node.name, command=case["command"],
                          host=case.get("host"), expect=case.get("expect") or {},
                          attempts=1, timeout_s=case.get("timeout", 60))
            r = run_check(node, check)
            return {"captured": r.model_dump(mode="json", exclude={"name", "node"})}
        node.put(f"{WORKDIR}/case.sh", case["command"] + "\n", 0o755)
        step = _run_step(node, "case", "script:case",
                         f"cd /root && DEBIAN_FRONTEND=noninteractive bash {WORKDIR}/case.sh",
                         case.get("timeout", 300))
        return {"captured": step.model_dump(mode="json", exclude={"node", "role", "artifact",
                                                                  "changed"})}
    finally:
        fault_file.write_text("")
        if case.get("cleanup"):
            node.run(case["cleanup"], timeout=120)


def relabel() -> int:
    """Expected class/evidence from CASES into the existing files; output untouched."""
    for case in CASES:
        path = CASES_DIR / f"{case['name']}.yaml"
        if not path.exists():
            print(f"{case['name']}: not captured yet")
            continue
        text = path.read_text()
        header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
        data = yaml.safe_load(text)
        data["failure_class"], data["evidence"] = case["cls"], case["evidence"]
        path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                                width=100))
    return 0


def main(argv: list[str]) -> int:
    from antrieb import Cluster

    if "--relabel" in argv:
        return relabel()
    from antrieb.converge.apply import prepare_nodes

    packages = next((a.split("=", 1)[1] for a in argv if a.startswith("--packages=")), PACKAGES)
    names = [a for a in argv[1:] if not a.startswith("--")]
    chosen = [c for c in CASES if not names or any(a in c["name"] for a in names)]
    fault_file = Path(tempfile.mkdtemp(prefix="antrieb-corpus-")) / "fault"
    fault_file.write_text("")
    os.environ["ANTRIEB_APT_FAULT"] = str(fault_file)  # read by the cluster's apt proxy
    with Cluster(nodes=1, image="debian-12") as cluster:
        node = cluster["node1"]
        prepare_nodes([node])
        t0 = time.monotonic()
        r = node.run("echo 'postfix postfix/main_mailer_type select Local only' | "
                     "debconf-set-selections && apt-get update -q && "
                     f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {packages}",
                     timeout=2400)
        print(f"install: rc={r.exit_status} in {time.monotonic() - t0:.0f}s", flush=True)
        if r.exit_status != 0:
            print(r.stdout[-3000:], r.stderr[-3000:])
            return 1
        for case in chosen:
            captured = _run_case(node, case, fault_file)["captured"]
            _dump(case, captured)
            print(f"{case['name']}: exit {captured.get('exit_status')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
