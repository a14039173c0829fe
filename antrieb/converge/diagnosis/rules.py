"""The rule table: which output line means which failure class, and why.

Each rule is a class, a pattern over one output line, and ``why``: what that line
tells, which is what decides the path (see :mod:`antrieb.converge.diagnosis.reasons`).
Rules are tried in order; the first rule with a matching line wins and that line is
the evidence. Lines known to be harmless (:data:`HARMLESS`) never match.

Every rule comes from real output: ``tests/unit/converge/corpus/`` holds what the
failing commands printed on a real VM and the class each must get.

Example::

    match = classify_lines(["E: Unable to locate package nginx-ful"])
    match.rule.failure_class, match.line   # ("missing_package", "E: Unable to ...")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from antrieb.converge.results import FailureClass

# The cluster's own names: nodes are bare host names, the apt proxy is apt.antrieb.
CLUSTER_SUFFIXES = (".antrieb", ".local", ".internal", ".localdomain")
PROXY_HOST = "apt.antrieb"


@dataclass(frozen=True)
class Rule:
    failure_class: FailureClass
    pattern: re.Pattern[str]
    why: str  # what the matched line tells, in words that justify the path
    name: str = ""


def _r(cls: FailureClass, name: str, pattern: str, why: str, flags: int = re.I) -> Rule:
    return Rule(cls, re.compile(pattern, flags), why, name)


# Lines that look like failures but are not: they must never decide a class.
HARMLESS: list[re.Pattern[str]] = [
    # postgres' tools started with runuser/sudo -u postgres from root's cwd: harmless
    re.compile(r'could not change directory to "[^"]*": Permission denied'),
    re.compile(r"^\[\.\.\.\]$"),  # where antrieb cut a long output (results.tail)
    re.compile(r"^debconf: (?:unable to initialize|falling back|delaying package)"),
    re.compile(r"dpkg-preconfigure: unable to re-open stdin"),
    re.compile(r"WARNING: apt does not have a stable CLI interface"),
    re.compile(r"^sudo: unable to resolve host"),
    re.compile(r"^perl: warning: |^locale: Cannot set"),
    re.compile(r"invoke-rc\.d: (?:could not determine current runlevel|policy-rc\.d denied)"),
]

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"


def is_outside(host: str) -> bool:
    """True for a name outside the cluster: a dotted name that is not the proxy's."""
    host = host.strip("'\"[]").lower()
    return "." in host and host != PROXY_HOST and not host.endswith(CLUSTER_SUFFIXES) \
        and not re.match(r"^(?:10|127)\.", host)


_MIRROR = "the package mirror or the cluster's apt proxy failed, not the code"
_EGRESS = ("only Debian's own packages are reachable (through the cluster's apt proxy); "
           "nothing else on the internet resolves or answers, so the code has to get what it "
           "needs from Debian's archive instead")

RULES: list[Rule] = [
    # -- not the script's fault: the platform ------------------------------------------
    _r("infrastructure", "mirror-5xx",
       rf"(?:{re.escape(PROXY_HOST)}|10\.77\.0\.1).*\b50[0-4]\b|\b50[0-4]\s+\w.*\[IP: 10\.77\.0\.1",
       "the package proxy answered a server error: " + _MIRROR),
    _r("infrastructure", "mirror-unreachable",
       rf"(?:{re.escape(PROXY_HOST)}|10\.77\.0\.1).*(?:Connection timed out|Could not connect|"
       r"Connection failed|Unable to connect|Connection refused)",
       "the package proxy did not answer: " + _MIRROR),
    _r("infrastructure", "mirror-inconsistent",
       r"Hash Sum mismatch|File has unexpected size|Mirror sync in progress",
       "the mirror served files that do not match its index (a sync in progress): " + _MIRROR),
    _r("infrastructure", "node-lost",
       r"^(?:SSHException|NoValidConnectionsError|ChannelException|EOFError|"
       r"ConnectionResetError|BrokenPipeError|SupervisorError|VMError|NodeError)\b|"
       r"Socket is closed|SSH session not active",
       "the connection to the VM was lost while the step ran, which the code cannot cause "
       "reliably"),
    # -- requests that leave the cluster -----------------------------------------------
    _r("egress_blocked", "fetch-outside", rf"Failed to fetch https?://({_HOST})/",
       "apt tried a repository outside Debian's archive, which the cluster's proxy refuses: "
       + _EGRESS),
    _r("egress_blocked", "resolve-outside",
       rf"Could not resolve (?:host:? )?'?({_HOST})'?|"
       rf"Temporary failure (?:in )?resolving '({_HOST})'",
       "a name outside the cluster did not resolve: " + _EGRESS),
    _r("egress_blocked", "proxy-denied", r"antrieb apt proxy: only http://|403\s+Forbidden",
       "the apt proxy refused a repository that is not Debian's: " + _EGRESS),
    _r("egress_blocked", "dns-outside", r"Temporary failure in name resolution",
       "a name went to DNS, which only happens for names outside the cluster (nodes resolve "
       "from /etc/hosts): " + _EGRESS),
    # -- missing things the log names --------------------------------------------------
    _r("missing_package", "apt-unknown",
       r"Unable to locate package|has no installation candidate|No package matching|"
       r"No matching distribution|Package '?[\w.+-]+'? is not available",
       "apt names the package it cannot find, so the fix (the Debian package name, or "
       "another way) follows from the log"),
    _r("missing_package", "apt-stale-lists", r"404\s+Not Found.*/pool/",
       "the package lists are older than the mirror (a 404 for a package file): the script "
       "has to run apt-get update before installing"),
    _r("missing_package", "dpkg-archive", r"dpkg: error: cannot access archive",
       "dpkg names a .deb file that is not there: only Debian's archive is reachable, so the "
       "package comes from apt"),
    _r("missing_package", "python-module", r"(?:ModuleNotFoundError|ImportError): No module named",
       "Python names the module it cannot import; Debian packages it as python3-<name>"),
    _r("missing_command", "python-pip", r"No module named pip",
       "pip is not installed (Debian ships it as python3-pip; PyPI is not reachable anyway)"),
    _r("missing_command", "shell-not-found",
       r"command not found|: not found$|No such file or directory.*(?:exec|bin/)|"
       r"Unable to find an? (?:executable|command)",
       "the shell names the command it cannot find: install it first or use another"),
    _r("missing_command", "unit-not-found",
       r"Unit \S+ (?:not found|could not be found)|Unit file \S+ does not exist|"
       r"Failed to (?:enable|start|restart) unit: Unit file",
       "systemd names a unit that is not installed: the package that ships it is missing or "
       "the unit name is wrong, which the log shows"),
    _r("missing_command", "ansible-module", r"couldn't resolve module/action",
       "Ansible names a module that is not installed on the control node: use a built-in "
       "module or install the collection from Debian"),
    _r("missing_command", "apache-module", r"ERROR: (?:Module|Site|Conf) \S+ does not exist",
       "Apache's a2en* names what does not exist: install the package that provides it or "
       "write the file first"),
    # -- the code itself ---------------------------------------------------------------
    _r("script_error", "bash-unbound", r": unbound variable$",
       "bash names the variable used before it was set, and the line"),
    _r("script_error", "bash-syntax",
       r"line \d+: syntax error|syntax error: unexpected end of file|"
       r"syntax error near unexpected token",
       "bash names the line where the script does not parse"),
    _r("script_error", "ansible-undefined", r"'[\w.]+' is undefined|undefined variable",
       "Ansible names the variable that is not defined"),
    _r("script_error", "python-exception",
       r"^(?:NameError|TypeError|AttributeError|KeyError|IndexError|SyntaxError|"
       r"IndentationError|ZeroDivisionError|UnboundLocalError): ",
       "Python names the exception and (in the traceback above it) the line"),
    # -- configuration that does not parse ---------------------------------------------
    _r("config_syntax", "checker",
       r"\[emerg\]|configuration file .* test failed|\[ALERT\].*pars|parsing \[.*\]|"
       r"Syntax Error while loading YAML|could not be parsed|invalid (?:option|directive)|"
       r"unknown directive|Errors? in configuration|"
       r"Bad configuration option|bad configuration options|unsupported option|"  # sshd -t
       r"Bad (?:yes/no|on/off) argument|"
       r"missing '[;{}]' before|unknown option|has no NS records|not loaded due to errors|"
       r"FATAL CONFIG FILE ERROR|Bad directive or wrong number of arguments|"  # redis
       r">>> .*: syntax error near line|parse error in|"  # visudo
       r"errors in crontab file|bad (?:minute|hour|day-of-month|month|day-of-week|command)|"
       r"error in your SQL syntax|"
       r"Syntax error on line \d+|Invalid command '|AH00526|"  # apache
       r"Invalid directive at line|Fatal error : |"  # chrony
       r"ERROR: Bad port|ERROR: Invalid syntax|"  # ufw
       r"Couldn't load target|Bad argument|iptables-restore: line \d+ failed|"
       r"Chain '\S+' does not exist|"
       r"unknown option \"|^Error: syntax error|"  # iptables, nft
       r"bad unit file setting|Unknown key name|Unknown section|"  # systemd
       r"postfix/postfix-script: fatal|fatal: .*(?:main|master)\.cf|"
       r"syntax error|unexpected (?:\"|'|end of file|token)",
       "the tool's own parser rejects the configuration and names what and where"),
    # -- access ------------------------------------------------------------------------
    _r("permission", "denied",
       r"Permission denied|Operation not permitted|EACCES|are you root\?|"
       r"must be run as root|no pg_hba\.conf entry|password authentication failed|"
       r"Access denied for user|NOAUTH Authentication required",
       "the log names the path or account that was refused"),
    # -- what only the live cluster explains -------------------------------------------
    _r("service_failed", "service",
       r"Job for \S+ failed|Failed to (?:start|restart|reload) |"
       r"failed \(Result: |Main process exited|status=\d+/FAILURE|Unit \S+ failed|is not active",
       "a service did not come up and the output does not say why: the reason is in the "
       "live node's journal and state"),
    _r("connectivity", "connect",
       r"Connection refused|Could not resolve host|Name or service not known|"
       r"No route to host|Connection timed out|Failed to connect|"
       r"\b50[234] (?:Bad Gateway|Service Unavailable|Gateway Time-?out)|No server is available|"
       r"UNREACHABLE!|connect\(\) failed|upstream timed out|Can't connect to (?:\w+ )?server|"
       r"Could not connect to",
       "something in the cluster did not answer: which listener, address or rule is wrong "
       "shows on the live cluster, not in the logs"),
]


@dataclass(frozen=True)
class Match:
    rule: Rule
    line: str  # the line that decided it
    lines: list[str]  # every line of the output this rule matched


_ERROR_LINE = re.compile(r"^(?:E: |(?:ERROR|Error|error|fatal|FATAL)\b)")
# antrieb's own kill of a step past its timeout: bash echoes the whole wrapper command
_KILLED = re.compile(r"^(?:bash: )?line \d+:\s+\d+ Killed\s+timeout -s KILL")
# the lines an unknown failure is most likely explained by
_ERRORISH = re.compile(r"error|fatal|fail|denied|not found|cannot|can't|unable|invalid|"
                       r"does not exist|already exists|no such", re.I)


def last_telling_line(lines: Sequence[str]) -> str | None:
    """The last line that reads like an error, else the last line (for unknowns)."""
    for line in reversed(lines):
        if _ERRORISH.search(line):
            return line
    return lines[-1] if lines else None


def useful_lines(text: str) -> list[str]:
    """Non-empty lines that are not known to be harmless."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if _KILLED.match(s):
            break  # what follows is our wrapper's text, not the step's output
        if s and not any(p.search(s) for p in HARMLESS):
            out.append(s[:300])
    return out


def _matches(rule: Rule, line: str) -> bool:
    m = rule.pattern.search(line)
    if m is None:
        return False
    if rule.name in ("resolve-outside", "fetch-outside"):  # a bare node name: connectivity
        host = next((g for g in m.groups() if g), "")
        return is_outside(host)
    return True


def classify_lines(lines: Sequence[str], allowed: Sequence[str] | None = None) -> Match | None:
    """The first rule (in table order) with a matching line, or None."""
    for rule in RULES:
        if allowed is not None and rule.failure_class not in allowed:
            continue
        hits = [line for line in lines if _matches(rule, line)]
        if hits:
            # apt and friends repeat the cause in a final "E: ..." line: the clearest quote
            errors = [h for h in hits if _ERROR_LINE.match(h)]
            return Match(rule, (errors or hits)[0], hits)
    return None


# Told to the model with an egress_blocked failure: what the cluster can reach.
EGRESS_ADVICE = (
    "Network reach of the cluster: the nodes reach each other, and Debian 12's own "
    "package archive (bookworm, bookworm-updates, bookworm-security) through the "
    "cluster's apt proxy, which apt already uses. Nothing else: no third-party apt "
    "repositories, no curl/wget downloads, no curl | sh installers, no pip/npm/gem "
    "registries, no DNS for outside names. Use the Debian packages instead.")
