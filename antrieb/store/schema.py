"""The store's schema, as an ordered list of migrations.

Why our own migrations and not Alembic or yoyo: the schema is a dozen plain tables
that must read the same in SQLite and PostgreSQL; Alembic would bring SQLAlchemy for
that, yoyo its own state tables and migration files. A ``schema_version`` table (one
row per applied step) and a list of numbered steps, each applied in one transaction,
is all it takes:

- a new column or table is a new :class:`Migration` appended to :data:`MIGRATIONS`;
  a step that shipped is never edited (stores in the field already ran it);
- opening a store applies what is missing, under a lock (PostgreSQL advisory lock,
  SQLite ``BEGIN IMMEDIATE``), so two processes opening a fresh store don't race;
- a store newer than this antrieb is refused with a clear error, never half-read.

Portable SQL: ``TEXT``, ``BIGINT``, ``INTEGER`` (flags are 0/1, so both dialects and
pandas read them alike), ``DOUBLE PRECISION`` (times are epoch seconds; Grafana's SQL
turns them into timestamps with ``to_timestamp``). JSON goes in ``TEXT`` columns.

Secrets: no table has a column for prompts, answers or API keys. ``llm_calls`` holds
model, purpose, tokens and latency only.

Event-derived rows are keyed by ``event_id`` (a digest of the event itself), so the live
writer and a later import of the run's ``events.jsonl`` produce the same rows, and
importing twice adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: list[str] = field(default_factory=list)


_RUNS = """
CREATE TABLE runs (
  run_id TEXT PRIMARY KEY,
  task_name TEXT,
  request TEXT,
  tool TEXT,
  provider TEXT,
  model TEXT,
  example TEXT,
  replay_of TEXT,
  experiment_id TEXT,
  experiment_index INTEGER,
  status TEXT,                 -- running | converged | failed | stopped | budget_exhausted
  reason TEXT,
  iterations INTEGER,
  created DOUBLE PRECISION,
  updated DOUBLE PRECISION,
  finished DOUBLE PRECISION,
  total_s DOUBLE PRECISION,
  in_vm_s DOUBLE PRECISION,
  llm_s DOUBLE PRECISION,
  cluster_up_s DOUBLE PRECISION,
  install_s DOUBLE PRECISION,
  vm_seconds DOUBLE PRECISION,
  prompt_tokens BIGINT,
  completion_tokens BIGINT,
  llm_calls INTEGER,
  final_artifacts TEXT,        -- JSON: role (or "playbook") -> text of the proven script
  design_notes TEXT,
  synthesis_notes TEXT,
  findings TEXT,               -- JSON list
  task TEXT,                   -- JSON of the task (request, topology, checks)
  budgets TEXT,                -- JSON
  record_dir TEXT
)"""

_ITERATIONS = """
CREATE TABLE iterations (
  run_id TEXT NOT NULL,
  iteration INTEGER NOT NULL,
  phase TEXT,                  -- attempt | verify
  passed INTEGER,
  started DOUBLE PRECISION,
  finished DOUBLE PRECISION,
  nodes TEXT,                  -- JSON: node -> role
  cluster_up_s DOUBLE PRECISION,
  apply_s DOUBLE PRECISION,
  checks_s DOUBLE PRECISION,
  install_s DOUBLE PRECISION,
  troubleshoot_s DOUBLE PRECISION,
  llm_s DOUBLE PRECISION,
  teardown_s DOUBLE PRECISION,
  iteration_s DOUBLE PRECISION,
  timings TEXT,                -- JSON: every timing of the iteration
  explanation TEXT,            -- the model's account of its correction
  PRIMARY KEY (run_id, iteration)
)"""

_STEPS = """
CREATE TABLE steps (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  node TEXT,
  role TEXT,
  command TEXT,                -- the artifact run: script:<role>, playbook (rerun: prefix)
  exit_status INTEGER,
  ok INTEGER,
  output TEXT,                 -- the tail of stdout + stderr
  seconds DOUBLE PRECISION,
  install_s DOUBLE PRECISION,
  timed_out INTEGER,
  changed INTEGER
)"""

_COMMANDS = """
CREATE TABLE commands (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  cluster TEXT,
  node TEXT,
  command TEXT,
  exit_status INTEGER,
  seconds DOUBLE PRECISION,
  truncated INTEGER,
  timed_out INTEGER
)"""

_CHECKS = """
CREATE TABLE checks (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  name TEXT,
  node TEXT,
  rerun INTEGER,               -- 1: the idempotence pass of the final proof
  passed INTEGER,
  detail TEXT,
  output TEXT,
  seconds DOUBLE PRECISION
)"""

_FAILURES = """
CREATE TABLE failures (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  failure_class TEXT,
  node TEXT,
  summary TEXT,
  evidence TEXT                -- JSON list of the lines that led to the class
)"""

_DECISIONS = """
CREATE TABLE recovery_decisions (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  path TEXT,                   -- retry | troubleshoot | rerun
  failure_class TEXT,
  reason TEXT,
  evidence TEXT
)"""

_LLM_CALLS = """
CREATE TABLE llm_calls (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  call_id TEXT,
  purpose TEXT,
  provider TEXT,
  model TEXT,
  attempt INTEGER,
  ok INTEGER,
  prompt_tokens BIGINT,
  completion_tokens BIGINT,
  seconds DOUBLE PRECISION
)"""

_TURNS = """
CREATE TABLE troubleshoot_turns (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  turn INTEGER,
  node TEXT,
  command TEXT,
  why TEXT,
  exit_status INTEGER,
  output TEXT,
  seconds DOUBLE PRECISION
)"""

_LOGS = """
CREATE TABLE logs (
  event_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  kind TEXT,                   -- the event kind
  level TEXT,                  -- info | warning | error
  source TEXT,                 -- node, cluster or engine part
  message TEXT
)"""

_EXPERIMENTS = """
CREATE TABLE experiments (
  experiment_id TEXT PRIMARY KEY,
  notebook TEXT,
  created DOUBLE PRECISION,
  points INTEGER,
  path TEXT
)"""

_POINTS = """
CREATE TABLE experiment_points (
  experiment_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  status TEXT,                 -- ok | failed
  error TEXT,
  output TEXT,                 -- the executed notebook
  started DOUBLE PRECISION,
  finished DOUBLE PRECISION,
  parameters TEXT,             -- JSON of the whole parameter set
  label TEXT,                  -- "k=v, k=v": one readable name per grid point
  PRIMARY KEY (experiment_id, idx)
)"""

_PARAMETERS = """
CREATE TABLE experiment_parameters (
  experiment_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  name TEXT NOT NULL,
  value TEXT,                  -- JSON of the value
  value_num DOUBLE PRECISION,  -- the value when it is a number, for charts
  PRIMARY KEY (experiment_id, idx, name)
)"""

_EXPERIMENT_RUNS = """
CREATE TABLE experiment_runs (
  experiment_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  run_id TEXT NOT NULL,
  PRIMARY KEY (experiment_id, idx, run_id)
)"""

_INDEXES = [
    f"CREATE INDEX {t}_run ON {t} (run_id, iteration)"
    for t in ("steps", "commands", "checks", "failures", "recovery_decisions", "llm_calls",
              "troubleshoot_turns", "logs")
] + ["CREATE INDEX runs_created ON runs (created)",
     "CREATE INDEX runs_experiment ON runs (experiment_id, experiment_index)"]

MIGRATIONS: list[Migration] = [
    Migration(1, "runs, iterations, steps, commands, checks, failures, recovery decisions, "
                 "LLM calls, troubleshoot turns, logs, experiments and their parameters",
              [_RUNS, _ITERATIONS, _STEPS, _COMMANDS, _CHECKS, _FAILURES, _DECISIONS,
               _LLM_CALLS, _TURNS, _LOGS, _EXPERIMENTS, _POINTS, _PARAMETERS,
               _EXPERIMENT_RUNS, *_INDEXES]),
    Migration(2, "experiment_points.mode: whether a grid point ran live, showed a recorded "
                 "run, or both", ["ALTER TABLE experiment_points ADD COLUMN mode TEXT"]),
    Migration(3, "recovery_decisions.classified_by: whether a rule or the model classified "
                 "the failure (path may now also be rerun: infrastructure failures)",
              ["ALTER TABLE recovery_decisions ADD COLUMN classified_by TEXT"]),
    Migration(4, "the proof's gates per verify iteration (fresh server, idempotent, reboot) "
                 "and what the scripts left behind (residue)",
              ["ALTER TABLE iterations ADD COLUMN fresh_server INTEGER",
               "ALTER TABLE iterations ADD COLUMN idempotent INTEGER",
               "ALTER TABLE iterations ADD COLUMN reboot TEXT",
               "ALTER TABLE iterations ADD COLUMN reboot_s DOUBLE PRECISION",
               "ALTER TABLE checks ADD COLUMN after_reboot INTEGER",
               """CREATE TABLE residue (
  event_id TEXT NOT NULL,
  run_id TEXT NOT NULL,
  iteration INTEGER,
  at DOUBLE PRECISION,
  node TEXT NOT NULL,
  kind TEXT NOT NULL,          -- file | private_key | package
  item TEXT NOT NULL,          -- a path or a package name
  detail TEXT,
  PRIMARY KEY (event_id, node, kind, item)
)""", "CREATE INDEX residue_run ON residue (run_id, iteration)"]),
    Migration(5, "experiment_points.worker, host, attempts: which Dask worker (and host) ran "
                 "a grid point, and how many tries it took (a retry after a lost worker)",
              ["ALTER TABLE experiment_points ADD COLUMN worker TEXT",
               "ALTER TABLE experiment_points ADD COLUMN host TEXT",
               "ALTER TABLE experiment_points ADD COLUMN attempts INTEGER"]),
]

LATEST = MIGRATIONS[-1].version

# The key of each table: upserts conflict on it, export copies by it.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "iterations": ("run_id", "iteration"),
    "steps": ("event_id",),
    "commands": ("event_id",),
    "checks": ("event_id",),
    "failures": ("event_id",),
    "recovery_decisions": ("event_id",),
    "llm_calls": ("event_id",),
    "troubleshoot_turns": ("event_id",),
    "logs": ("event_id",),
    "experiments": ("experiment_id",),
    "experiment_points": ("experiment_id", "idx"),
    "experiment_parameters": ("experiment_id", "idx", "name"),
    "experiment_runs": ("experiment_id", "idx", "run_id"),
    "residue": ("event_id", "node", "kind", "item"),
}
TABLES = tuple(PRIMARY_KEYS)
