"""Writes grafana/dashboards/*.json from the panel list below: one place for each
panel's title, kind and SQL, so the JSON stays consistent (datasource, links, layout).

Run it after changing a panel:  .venv/bin/python grafana/build_dashboards.py
tests/integration/test_grafana.py runs every panel's SQL against a real PostgreSQL.

SQL conventions: times in the store are epoch seconds (``to_timestamp`` for Grafana),
flags are 0/1, the dashboard time range filters runs by ``$__unixEpochFilter(created)``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "grafana-postgresql-datasource", "uid": "antrieb-pg"}
RUN_LINK = "/d/antrieb-run/antrieb-run?var-run_id=${__data.fields.run_id}"
IN_RANGE = "$__unixEpochFilter(created)"


def panel(title: str, kind: str, sql: str, w: int = 12, h: int = 8, fmt: str = "table",
          description: str = "", **extra: object) -> dict:
    p = {"title": title, "type": kind, "datasource": DS, "description": description,
         "gridPos": {"w": w, "h": h},
         "targets": [{"refId": "A", "datasource": DS, "editorMode": "code", "format": fmt,
                      "rawQuery": True, "rawSql": " ".join(sql.split())}],
         "options": {}, "fieldConfig": {"defaults": {}, "overrides": []}}
    p.update(extra)
    return p


def link_run_ids(p: dict) -> dict:
    p["fieldConfig"]["overrides"].append({
        "matcher": {"id": "byName", "options": "run_id"},
        "properties": [{"id": "links", "value": [{"title": "run detail", "url": RUN_LINK}]}]})
    return p


def layout(panels: list[dict]) -> list[dict]:
    x = y = row_h = 0
    for i, p in enumerate(panels, 1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"].update(x=x, y=y)
        p["id"] = i
        x, row_h = x + w, max(row_h, h)
    return panels


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict],
              description: str) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["antrieb"],
        "editable": True, "schemaVersion": 39, "version": 1, "timezone": "browser",
        "time": {"from": "now-30d", "to": "now"}, "refresh": "30s",
        "templating": {"list": variables},
        "links": [{"title": t, "url": f"/d/{u}/{u}", "type": "link"} for u, t in (
            ("antrieb-overview", "Overview"), ("antrieb-run", "Run detail"),
            ("antrieb-experiments", "Experiments")) if u != uid],
        "panels": layout(panels),
    }


def variable(name: str, label: str, sql: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": " ".join(sql.split()), "definition": " ".join(sql.split()),
            "refresh": 2, "sort": 0, "includeAll": False, "multi": False,
            "current": {}, "options": []}


def overview() -> dict:
    panels = [
        panel("Runs", "stat", f"SELECT COUNT(*) AS runs FROM runs WHERE {IN_RANGE}", w=4, h=4),
        panel("Convergence rate", "stat", f"""
            SELECT 100.0 * SUM(CASE WHEN status = 'converged' THEN 1 ELSE 0 END)
                   / NULLIF(COUNT(*), 0) AS converged_pct
            FROM runs WHERE {IN_RANGE} AND status <> 'running'""", w=4, h=4,
              description="Finished runs that converged (stopped and budget-exhausted "
                          "runs count as not converged).",
              fieldConfig={"defaults": {"unit": "percent"}, "overrides": []}),
        panel("Median time to converge", "stat", f"""
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total_s) AS median_s
            FROM runs WHERE {IN_RANGE} AND status = 'converged'""", w=4, h=4,
              fieldConfig={"defaults": {"unit": "s"}, "overrides": []}),
        panel("Iterations per converged run", "stat", f"""
            SELECT AVG(iterations) AS iterations FROM runs
            WHERE {IN_RANGE} AND status = 'converged'""", w=4, h=4),
        panel("LLM tokens", "stat", f"""
            SELECT SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)) AS tokens
            FROM runs WHERE {IN_RANGE}""", w=4, h=4),
        panel("VM-seconds", "stat", f"""
            SELECT SUM(vm_seconds) AS vm_seconds FROM runs WHERE {IN_RANGE}""", w=4, h=4,
              description="Sum over clusters of nodes x seconds up: the compute cost."),
        link_run_ids(panel("Runs", "table", f"""
            SELECT to_timestamp(created) AS started, run_id, task_name, status, iterations,
                   ROUND(total_s::numeric, 1) AS total_s,
                   (SELECT string_agg(d.path, ', ' ORDER BY d.iteration)
                      FROM recovery_decisions d WHERE d.run_id = runs.run_id) AS paths,
                   COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0) AS tokens,
                   model, reason
            FROM runs WHERE {IN_RANGE} ORDER BY created DESC""", w=24, h=9,
                           description="Click a run ID for its detail page.")),
        panel("Runs over time", "timeseries", f"""
            SELECT $__unixEpochGroupAlias(created, 1h), COUNT(*) AS runs,
                   SUM(CASE WHEN status = 'converged' THEN 1 ELSE 0 END) AS converged
            FROM runs WHERE {IN_RANGE} GROUP BY 1 ORDER BY 1""", fmt="time_series",
              options={"legend": {"displayMode": "list", "placement": "bottom"}}),
        panel("Iterations per run", "barchart", f"""
            SELECT task_name || ' ' || RIGHT(run_id, 4) AS run, iterations
            FROM runs WHERE {IN_RANGE} ORDER BY created""",
              options={"xField": "run", "orientation": "horizontal"}),
        panel("Time to converge, and where it went", "barchart", f"""
            SELECT task_name || ' ' || RIGHT(run_id, 4) AS run, in_vm_s, llm_s,
                   total_s - COALESCE(in_vm_s, 0) - COALESCE(llm_s, 0) AS overhead_s
            FROM runs WHERE {IN_RANGE} AND status = 'converged' ORDER BY created""",
              options={"xField": "run", "orientation": "horizontal", "stacking": "normal"},
              fieldConfig={"defaults": {"unit": "s"}, "overrides": []}),
        panel("Recovery paths chosen", "piechart", """
            SELECT d.path AS path, COUNT(*) AS decisions
            FROM recovery_decisions d JOIN runs r ON r.run_id = d.run_id
            WHERE $__unixEpochFilter(r.created) GROUP BY d.path ORDER BY 2 DESC""", w=8,
              options={"reduceOptions": {"values": True, "calcs": ["lastNotNull"]},
                       "pieType": "donut", "legend": {"displayMode": "table",
                                                      "placement": "right",
                                                      "values": ["value"]}}),
        panel("Failure classes", "barchart", """
            SELECT f.failure_class, COUNT(*) AS failures
            FROM failures f JOIN runs r ON r.run_id = f.run_id
            WHERE $__unixEpochFilter(r.created) GROUP BY f.failure_class ORDER BY 2 DESC""",
              w=8, options={"xField": "failure_class", "orientation": "horizontal"}),
        panel("Why each path was chosen", "table", """
            SELECT d.failure_class, d.path, COALESCE(d.classified_by, 'rules') AS classified_by,
                   COUNT(*) AS times, MAX(d.reason) AS example_reason
            FROM recovery_decisions d JOIN runs r ON r.run_id = d.run_id
            WHERE $__unixEpochFilter(r.created)
            GROUP BY 1, 2, 3 ORDER BY times DESC""", w=8),
        link_run_ids(panel("Cost per run", "table", f"""
            SELECT run_id, task_name, model, llm_calls, prompt_tokens, completion_tokens,
                   ROUND(vm_seconds::numeric, 0) AS vm_seconds,
                   ROUND(llm_s::numeric, 2) AS llm_s
            FROM runs WHERE {IN_RANGE} ORDER BY created DESC""", w=24)),
    ]
    return dashboard("antrieb-overview", "antrieb: overview", panels, [],
                     "Every run of the store: outcomes, iterations, paths, cost.")


RUN = "run_id = '$run_id'"


def run_detail() -> dict:
    panels = [
        panel("Outcome", "table", f"""
            SELECT status, iterations, ROUND(total_s::numeric, 1) AS total_s,
                   ROUND(in_vm_s::numeric, 1) AS in_vm_s, ROUND(llm_s::numeric, 2) AS llm_s,
                   COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0) AS tokens,
                   model, reason
            FROM runs WHERE {RUN}""", w=24, h=4),
        panel("Iteration timeline", "state-timeline", f"""
            SELECT to_timestamp(started) AS time,
                   CASE WHEN passed = 1 THEN 'iteration ' || iteration || ' ' || phase
                        || ': passed'
                        ELSE 'iteration ' || iteration || ' ' || phase || ': failed' END
                   AS iteration
            FROM iterations WHERE {RUN}
            UNION ALL
            SELECT to_timestamp(MAX(finished)), 'done' FROM iterations WHERE {RUN}
            ORDER BY 1""", w=24, h=5,
              description="One band per fresh cluster: attempts, then the proof."),
        panel("Timings per iteration", "barchart", f"""
            SELECT 'it ' || iteration || ' ' || phase AS iteration, cluster_up_s, apply_s,
                   install_s, checks_s, troubleshoot_s, llm_s, teardown_s
            FROM iterations WHERE {RUN} ORDER BY iteration""",
              options={"xField": "iteration", "stacking": "none"},
              fieldConfig={"defaults": {"unit": "s"}, "overrides": []}),
        panel("Package layers", "table", f"""
            SELECT iteration, phase,
                   COALESCE((timings::json->>'layer_hits')::float, 0)::int
                   AS nodes_from_layer,
                   ROUND(((timings::json->>'layer_build_s')::float)::numeric, 1)
                   AS layer_build_s,
                   ROUND(install_s::numeric, 1) AS install_s,
                   ROUND(((timings::json->>'install_saved_s')::float)::numeric, 1)
                   AS install_saved_s
            FROM iterations WHERE {RUN} ORDER BY iteration""",
              description="Nodes that started from a package layer, the seconds spent "
                          "making layers, and the install seconds saved against the "
                          "run's last attempt from the pristine golden (both measured)."),
        panel("Proof gates", "table", f"""
            SELECT iteration, CASE WHEN fresh_server = 1 THEN 'yes' ELSE 'no' END
                   AS fresh_server,
                   CASE WHEN idempotent = 1 THEN 'passed' WHEN idempotent = 0 THEN 'FAILED'
                        ELSE 'not run' END AS idempotent,
                   reboot, ROUND(reboot_s::numeric, 1) AS reboot_s,
                   (SELECT COUNT(*) FROM residue r WHERE r.run_id = i.run_id
                      AND r.iteration = i.iteration) AS residue
            FROM iterations i WHERE i.{RUN} AND phase = 'verify' ORDER BY iteration""",
              description="Each proof on a fresh-server cluster: applied twice, rebooted, "
                          "checks again; residue = what the scripts left behind."),
        panel("Residue", "table", f"""
            SELECT iteration, node, kind, item, detail
            FROM residue WHERE {RUN}
            UNION ALL
            SELECT MAX(iteration), '-', 'none', 'nothing left behind',
                   'the proof found no residue'
            FROM iterations WHERE {RUN} AND phase = 'verify'
              AND NOT EXISTS (SELECT 1 FROM residue WHERE {RUN})
            HAVING COUNT(*) > 0
            ORDER BY 1, 2, 3, 4""",
              description="Scratch files, private keys others may read, packages no "
                          "script names: left on the proof's nodes."),
        panel("Why each path was chosen", "table", f"""
            SELECT d.iteration, f.failure_class, f.node, d.path, d.classified_by, d.reason,
                   i.explanation
            FROM recovery_decisions d
            LEFT JOIN failures f ON f.run_id = d.run_id AND f.iteration = d.iteration
            LEFT JOIN iterations i ON i.run_id = d.run_id AND i.iteration = d.iteration
            WHERE d.{RUN} ORDER BY d.iteration"""),
        panel("Failure analysis", "table", f"""
            SELECT iteration, failure_class, node, summary, evidence
            FROM failures WHERE {RUN} ORDER BY iteration, at""", w=24, h=7),
        panel("Check results", "table", f"""
            SELECT iteration, name, node, CASE WHEN rerun = 1 THEN 'idempotence'
                   WHEN after_reboot = 1 THEN 'after reboot' ELSE 'first' END AS pass,
                   CASE WHEN passed = 1 THEN 'pass' ELSE 'FAIL' END AS result,
                   ROUND(seconds::numeric, 2) AS seconds, detail
            FROM checks WHERE {RUN} ORDER BY at""", w=24, h=9),
        panel("Steps", "table", f"""
            SELECT iteration, node, role, command, exit_status,
                   ROUND(seconds::numeric, 1) AS seconds, ROUND(install_s::numeric, 1)
                   AS install_s, RIGHT(output, 300) AS output_tail
            FROM steps WHERE {RUN} ORDER BY at""", w=24, h=9),
        panel("Troubleshoot transcript", "table", f"""
            SELECT iteration, turn, node, why, command, exit_status, output
            FROM troubleshoot_turns WHERE {RUN} ORDER BY iteration, turn""", w=24, h=8,
              description="The commands the model asked for on the live failed cluster."),
        panel("LLM calls", "table", f"""
            SELECT to_timestamp(at) AS time, iteration, purpose, model, attempt,
                   CASE WHEN ok = 1 THEN 'ok' ELSE 'unusable' END AS answer,
                   prompt_tokens, completion_tokens, ROUND(seconds::numeric, 2) AS seconds
            FROM llm_calls WHERE {RUN} ORDER BY at"""),
        panel("Final script", "table", f"""
            SELECT a.key AS artifact, a.value AS text
            FROM runs, json_each_text(CAST(runs.final_artifacts AS json)) a
            WHERE runs.{RUN}""", description="The synthesized, proven artifacts."),
        panel("Log", "logs", f"""
            SELECT to_timestamp(at) AS time, level, '[' || source || '] ' || message
                   AS message
            FROM logs WHERE {RUN} ORDER BY at""", w=24, h=12,
              options={"showTime": True, "wrapLogMessage": True, "sortOrder": "Ascending"}),
    ]
    var = variable("run_id", "run", """
        SELECT run_id AS __value, task_name || ' ' || run_id || ' (' || status || ')'
               AS __text FROM runs ORDER BY created DESC""")
    return dashboard("antrieb-run", "antrieb: run detail", panels, [var],
                     "One run: iterations, decisions and why, checks, troubleshooting, log.")


EXP = "experiment_id = '$experiment_id'"


def experiments() -> dict:
    grid = f"""
        FROM experiment_points p
        LEFT JOIN experiment_runs er ON er.experiment_id = p.experiment_id AND er.idx = p.idx
        LEFT JOIN runs r ON r.run_id = er.run_id
        WHERE p.{EXP}"""
    panels = [
        panel("Experiments", "table", f"""
            SELECT to_timestamp(created) AS created, experiment_id, notebook, points
            FROM experiments WHERE {IN_RANGE} ORDER BY created DESC""", w=24, h=5),
        link_run_ids(panel("Parameter grid compared", "table", f"""
            SELECT p.idx, p.label AS parameters, p.status AS notebook, p.mode, r.run_id,
                   r.status AS run, r.iterations, ROUND(r.total_s::numeric, 1) AS total_s,
                   COALESCE(r.prompt_tokens, 0) + COALESCE(r.completion_tokens, 0) AS tokens,
                   (SELECT string_agg(d.path, ', ' ORDER BY d.iteration)
                      FROM recovery_decisions d WHERE d.run_id = r.run_id) AS paths,
                   p.host, p.attempts, p.error
            {grid} ORDER BY p.idx""", w=24, h=8,
            description="On Dask, host is the hypervisor host that ran the point and "
                        "attempts counts its tries (more than 1: a lost worker).")),
        panel("Time to converge by grid point", "barchart", f"""
            SELECT p.label AS parameters, r.total_s, r.in_vm_s, r.llm_s
            {grid} ORDER BY p.idx""",
              options={"xField": "parameters", "orientation": "horizontal"},
              fieldConfig={"defaults": {"unit": "s"}, "overrides": []}),
        panel("Iterations and tokens by grid point", "barchart", f"""
            SELECT p.label AS parameters, r.iterations,
                   COALESCE(r.prompt_tokens, 0) + COALESCE(r.completion_tokens, 0) AS tokens
            {grid} ORDER BY p.idx""",
              options={"xField": "parameters", "orientation": "horizontal"}),
        panel("Outcome by parameter value", "table", f"""
            SELECT ep.name AS parameter, ep.value, COUNT(DISTINCT ep.idx) AS points,
                   SUM(CASE WHEN r.status = 'converged' THEN 1 ELSE 0 END) AS converged,
                   ROUND(AVG(r.total_s)::numeric, 1) AS mean_total_s,
                   ROUND(AVG(r.iterations)::numeric, 2) AS mean_iterations
            FROM experiment_parameters ep
            LEFT JOIN experiment_runs er ON er.experiment_id = ep.experiment_id
                 AND er.idx = ep.idx
            LEFT JOIN runs r ON r.run_id = er.run_id
            WHERE ep.{EXP} GROUP BY ep.name, ep.value ORDER BY ep.name, ep.value""",
              description="Each parameter value across the grid: did it converge, how "
                          "fast."),
        panel("Pass rate by model and task", "table", f"""
            SELECT model, task, COUNT(*) AS runs,
                   SUM(ok) AS converged,
                   ROUND(AVG(ok)::numeric, 2) AS "pass@1",
                   MAX(ok) AS "pass@k",
                   ROUND(AVG(CASE WHEN ok = 1 THEN iterations END)::numeric, 2)
                       AS mean_iterations_to_converge,
                   ROUND(AVG(total_s)::numeric, 1) AS mean_wall_s,
                   SUM(tokens) AS tokens
            FROM (SELECT COALESCE(TRIM(BOTH '"' FROM pl.value), r.model, r.provider)
                             AS model,
                         COALESCE(TRIM(BOTH '"' FROM pt.value), r.task_name) AS task,
                         CASE WHEN r.status = 'converged' THEN 1 ELSE 0 END AS ok,
                         r.iterations, r.total_s,
                         COALESCE(r.prompt_tokens, 0) + COALESCE(r.completion_tokens, 0)
                             AS tokens
                  FROM experiment_runs er
                  JOIN runs r ON r.run_id = er.run_id
                  LEFT JOIN experiment_parameters pl ON pl.experiment_id = er.experiment_id
                       AND pl.idx = er.idx AND pl.name = 'llm'
                  LEFT JOIN experiment_parameters pt ON pt.experiment_id = er.experiment_id
                       AND pt.idx = er.idx AND pt.name = 'task'
                  WHERE er.{EXP}) AS per_run
            GROUP BY model, task ORDER BY model, task""", w=24, h=7,
              description="An evaluation's figures (antrieb eval): per model and task, "
                          "pass@1 is the share of repeats that converged, pass@k whether "
                          "any of the k repeats did. For a papermill experiment the model "
                          "is the run's own and the task its task."),
        panel("Numeric parameters against time to converge", "xychart", f"""
            SELECT ep.name AS parameter, ep.value_num AS value, r.total_s
            FROM experiment_parameters ep
            JOIN experiment_runs er ON er.experiment_id = ep.experiment_id
                 AND er.idx = ep.idx
            JOIN runs r ON r.run_id = er.run_id
            WHERE ep.{EXP} AND ep.value_num IS NOT NULL ORDER BY ep.name, ep.value_num"""),
    ]
    var = variable("experiment_id", "experiment", """
        SELECT experiment_id AS __value, experiment_id || ' (' || COALESCE(notebook, '')
               || ')' AS __text FROM experiments ORDER BY created DESC""")
    return dashboard("antrieb-experiments", "antrieb: experiments", panels, [var],
                     "Papermill experiments: each grid point's parameters and outcome.")


def main() -> None:
    out = HERE / "dashboards"
    out.mkdir(exist_ok=True)
    for name, board in (("overview", overview()), ("run", run_detail()),
                        ("experiments", experiments())):
        (out / f"antrieb-{name}.json").write_text(json.dumps(board, indent=2) + "\n")


if __name__ == "__main__":
    main()
