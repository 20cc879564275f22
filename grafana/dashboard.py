"""Builds grafana/macie-classification-jobs.json with grafana-foundation-sdk.

`python -m grafana.dashboard` prints the dashboard; `--write` rewrites the committed file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

UID = "macie-classification-jobs"
OUTPUT = Path(__file__).resolve().parent / "macie-classification-jobs.json"

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Selectors: per-job series follow the job variable; exporter health is per target.
JOBS = 'account_id=~"$account", region=~"$region", job_name=~"$job"'
TARGETS = 'account_id=~"$account", region=~"$region"'
JOB_KEY = "account_id, region, job_id"
JOB_LABELS = "account_id, region, job_id, job_name"
DAY = 86400

STATUS_COLOURS = {
    "RUNNING": "blue",
    "IDLE": "purple",
    "COMPLETE": "green",
    "USER_PAUSED": "orange",
    "PAUSED": "red",  # by Macie, for a quota
    "CANCELLED": "text",
}


def status_is(status: str) -> str:
    """The jobs whose current status is `status` (a state-set selector, 1 for the current one)."""
    return f'macie_classification_job_status{{{JOBS}, status="{status}"}} == 1'


def query(expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False,
          as_table: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).legend_format(legend).datasource(DATASOURCE)
    q = q.instant() if instant else q.range()
    if as_table:
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


def thresholds(base: str, *steps: tuple[float, str]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=None, color=base)]
        + [dm.Threshold(value=value, color=colour) for value, colour in steps])


def value_map(entries: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    """{value: (text, colour)} → one value mapping."""
    return [dm.ValueMap(options={
        value: dm.ValueMappingResult(text=text, color=colour, index=index)
        for index, (value, (text, colour)) in enumerate(entries.items())})]


STATUS_MAPPING = value_map({status: (status, colour) for status, colour in STATUS_COLOURS.items()})
LAST_RUN_ERROR_MAPPING = value_map({"0": ("OK", "green"), "1": ("ERROR", "red")})
# Macie's job log event types: account-level errors red, bucket-level ones orange.
EVENT_TYPE_MAPPING: list[dm.ValueMapping] = [
    dm.RegexMap(options=dm.DashboardRegexMapOptions(
        pattern=pattern, result=dm.ValueMappingResult(color=colour, index=index)))
    for index, (pattern, colour) in enumerate((("^ACCOUNT_.*", "red"), ("^BUCKET_.*", "orange"),
                                               ("^unparsed$", "#808080")))]
REFRESH_MAPPING = value_map({"0": ("failing", "red"), "1": ("ok", "green")})
PAUSE_THRESHOLDS = thresholds("red", (DAY, "orange"), (7 * DAY, "green"))
COLOURED = {"type": "color-background", "mode": "basic"}

SEVERITY_COLOURS = {"High": "red", "Medium": "orange", "Low": "yellow"}
# Relationship statuses of Macie member accounts: red ones stop the analysis of the member's
# buckets (the MacieMemberNotEnabled alert), blue ones are steps of joining.
MEMBER_STATUS_COLOURS = {
    "Enabled": "green",
    "Paused": "orange",
    "Removed": "red",
    "Resigned": "red",
    "RegionDisabled": "red",
    "AccountSuspended": "red",
    "EmailVerificationFailed": "red",
    "Invited": "blue",
    "Created": "blue",
    "EmailVerificationInProgress": "blue",
}
MEMBER_STATUS_MAPPING = value_map(
    {status: (status, colour) for status, colour in MEMBER_STATUS_COLOURS.items()})
ANALYSED_MAPPING = value_map({"0": ("no", "red"), "1": ("yes", "green")})
QUOTA_MAPPING = value_map({"0": ("below", "green"), "1": ("reached", "red")})
# macie_status (a state set) as one number per account and region, for a state timeline.
MACIE_STATUS_CODES = {"ENABLED": (1, "green"), "PAUSED": (2, "orange"), "DISABLED": (3, "#808080")}
MACIE_STATUS_MAPPING = value_map(
    {str(code): (status, colour) for status, (code, colour) in MACIE_STATUS_CODES.items()})


def legend(placement: cm.LegendPlacement = cm.LegendPlacement.BOTTOM,
           calcs: tuple[str, ...] = ()) -> common.VizLegendOptions:
    mode = cm.LegendDisplayMode.TABLE if calcs else cm.LegendDisplayMode.LIST
    return (common.VizLegendOptions().show_legend(True).display_mode(mode).placement(placement)
            .calcs(list(calcs)))


def column(name: str, *properties: tuple[str, object],
           ) -> dash.DashboardFieldConfigSourceOverrides:
    """Field-config properties for one table column (or series), by its display name."""
    return (dash.DashboardFieldConfigSourceOverrides()
            .matcher(dm.MatcherConfig(id_val="byName", options=name))
            .properties([dm.DynamicConfigValue(id_val=key, value=value)
                         for key, value in properties]))


def fixed_colour(name: str, colour: str) -> dash.DashboardFieldConfigSourceOverrides:
    return column(name, ("color", {"mode": "fixed", "fixedColor": colour}))


def merged_table(title: str, description: str, targets: list[prometheus.Dataquery],
                 columns: dict[str, str], hidden: list[str]) -> table.Panel:
    """A table of instant queries merged into one row per key, its columns renamed and ordered."""
    return (
        table.Panel().title(title).description(description).datasource(DATASOURCE)
        .targets(list(targets))
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {name: True for name in hidden},
            "indexByName": {name: index for index, name in enumerate(columns)},
            "renameByName": columns,
        }))
        .filterable(True).cell_options(cm.TableAutoCellOptions())
        .footer(common.TableFooterOptions().show(False).reducer(["sum"])))


def count_stat(title: str, description: str, expr: str,
               colours: dash.ThresholdsConfig) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE)
            .with_target(query(expr, instant=True)).height(4).span(4).unit("none")
            .thresholds(colours).color_mode(cm.BigValueColorMode.BACKGROUND)
            .graph_mode(cm.BigValueGraphMode.NONE)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def overview(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Overview: what state are the jobs in?"))
    board.with_panel(count_stat(
        "Jobs", "Classification jobs listed by Macie (every status).",
        f"count(macie_classification_job_info{{{JOBS}}})", thresholds("blue")))
    board.with_panel(count_stat(
        "Running", "Jobs whose status is RUNNING.",
        f'sum(macie_classification_job_status{{{JOBS}, status="RUNNING"}})',
        thresholds("blue")))
    board.with_panel(count_stat(
        "Paused by a user", "USER_PAUSED jobs: Macie cancels them 30 days after the pause.",
        f'sum(macie_classification_job_status{{{JOBS}, status="USER_PAUSED"}})',
        thresholds("green", (1, "orange"))))
    board.with_panel(count_stat(
        "Paused by Macie (quota)",
        "PAUSED jobs: Macie paused them because a monthly sensitive-data discovery quota was "
        "reached; they resume when the quota allows.",
        f'sum(macie_classification_job_status{{{JOBS}, status="PAUSED"}})',
        thresholds("green", (1, "red"))))
    board.with_panel(count_stat(
        "Last run had errors", "Jobs whose last run reported errors (lastRunErrorStatus ERROR).",
        f"sum(macie_classification_job_last_run_error{{{JOBS}}})",
        thresholds("green", (1, "red"))))
    board.with_panel(count_stat(
        "Pause expires within a day",
        "USER_PAUSED jobs that Macie will cancel in less than 24 hours.",
        f"count((macie_classification_job_pause_expiry_timestamp_seconds{{{JOBS}}} - time()"
        f" < {DAY}) and on({JOB_KEY}) ({status_is('USER_PAUSED')}))"
        # 0 rather than no data while there are jobs at all.
        f" or sum(macie_classification_job_status{{{JOBS}, status=\"USER_PAUSED\"}}) * 0",
        thresholds("green", (1, "red"))))
    board.with_panel(
        bargauge.Panel().title("Jobs by status and type").datasource(DATASOURCE)
        .description("Number of jobs in each status, split by job type (ONE_TIME, SCHEDULED).")
        .with_target(query(
            f"sum by (job_type, status) ({status_is_any()} * on({JOB_KEY}) group_left(job_type)"
            f" macie_classification_job_info{{{JOBS}}})",
            "{{status}} · {{job_type}}", instant=True))
        .height(7).span(12).unit("none").min(0)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC_BY_NAME))
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    board.with_panel(
        timeseries.Panel().title("Jobs by status over time").datasource(DATASOURCE)
        .description("How many jobs were in each status, over the dashboard's time range.")
        .with_target(query(f"sum by (status) ({status_is_any()})", "{{status}}"))
        .height(7).span(12).unit("none").min(0).fill_opacity(20).line_width(1)
        .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        .legend(legend(cm.LegendPlacement.RIGHT))
        .overrides([dash.DashboardFieldConfigSourceOverrides()
                    .matcher(dm.MatcherConfig(id_val="byName", options=status))
                    .properties([dm.DynamicConfigValue(
                        id_val="color", value={"mode": "fixed", "fixedColor": colour})])
                    for status, colour in STATUS_COLOURS.items() if colour != "text"]))


def status_is_any() -> str:
    """The current status of each job (one series per job, value 1)."""
    return f"(macie_classification_job_status{{{JOBS}}} == 1)"


def jobs_table(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Jobs: which job is where, and what needs attention?"))
    targets = [
        query(f"max by ({JOB_LABELS}, job_type, schedule) "
              f"(macie_classification_job_info{{{JOBS}}})", ref="A", instant=True, as_table=True),
        query(f"max by ({JOB_LABELS}, status) {status_is_any()}",
              ref="B", instant=True, as_table=True),
        query(f"max by ({JOB_LABELS}) (macie_classification_job_runs{{{JOBS}}})",
              ref="C", instant=True, as_table=True),
        query(f"max by ({JOB_LABELS}) (macie_classification_job_objects_to_process{{{JOBS}}})",
              ref="D", instant=True, as_table=True),
        query(f"max by ({JOB_LABELS}) "
              f"(macie_classification_job_last_run_timestamp_seconds{{{JOBS}}}) * 1000",
              ref="E", instant=True, as_table=True),
        query(f"max by ({JOB_LABELS}) (macie_classification_job_pause_expiry_timestamp_seconds"
              f"{{{JOBS}}} - time()) and on({JOB_KEY}) ({status_is('USER_PAUSED')})",
              ref="F", instant=True, as_table=True),
        query(f"max by ({JOB_LABELS}) (macie_classification_job_last_run_error{{{JOBS}}})",
              ref="G", instant=True, as_table=True),
    ]
    columns = {
        "job_name": "Job", "status": "Status", "job_type": "Type", "schedule": "Schedule",
        "Value #C": "Runs", "Value #D": "Objects to process", "Value #E": "Last run",
        "Value #F": "Pause expires in", "Value #G": "Last run errors", "account_id": "Account",
        "region": "Region", "job_id": "Job ID",
    }
    hidden = ["Time", "Value #A", "Value #B"]
    board.with_panel(
        merged_table("Classification jobs",
                     "One row per job. Click a column header to sort. Pause expiry is the time "
                     "left before Macie cancels a USER_PAUSED job (red under a day).",
                     targets, columns, hidden)
        .height(12).span(24)
        .sort_by([common.TableSortByFieldState().display_name("Objects to process").desc(True)])
        .overrides([
            column("Status", ("mappings", STATUS_MAPPING), ("custom.cellOptions", COLOURED)),
            column("Runs", ("unit", "none")),
            column("Objects to process", ("unit", "short")),
            column("Last run", ("unit", "dateTimeFromNow")),
            column("Pause expires in", ("unit", "dtdurations"),
                   ("thresholds", PAUSE_THRESHOLDS.build()),
                   ("color", {"mode": "thresholds"}), ("custom.cellOptions", COLOURED)),
            column("Last run errors", ("mappings", LAST_RUN_ERROR_MAPPING),
                   ("custom.cellOptions", COLOURED)),
        ]))
    error_key = f"{JOB_LABELS}, event_type, affected_resource"
    board.with_panel(
        merged_table(
            "Why the last runs had errors",
            "The account- and bucket-level errors of each job's latest run, from Macie's job "
            "log events in CloudWatch Logs: one row per job, event type and bucket (or account) "
            "it hit, with the number of events. Only jobs whose last run had errors; a new run "
            "replaces them. See the runbook (MacieClassificationJobBucketErrors) for each event "
            "type.",
            [query(f"max by ({error_key}) (macie_classification_job_run_errors{{{JOBS}}})",
                   instant=True, as_table=True)],
            {"job_name": "Job", "event_type": "Event type",
             "affected_resource": "Bucket or account", "Value": "Events",
             "account_id": "Account", "region": "Region", "job_id": "Job ID"},
            ["Time"])
        .height(8).span(24)
        .sort_by([common.TableSortByFieldState().display_name("Events").desc(True)])
        .overrides([
            column("Event type", ("mappings", EVENT_TYPE_MAPPING),
                   ("custom.cellOptions", COLOURED)),
            column("Events", ("unit", "none"), ("decimals", 0)),
        ]))


def progress(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Progress: are running jobs moving, and are schedules running?"))
    board.with_panel(
        timeseries.Panel().title("Objects to process: running jobs").datasource(DATASOURCE)
        .description("Macie's estimate of the objects a RUNNING job still has to analyse. A "
                     "flat line means the job is not progressing.")
        .with_target(query(
            f"macie_classification_job_objects_to_process{{{JOBS}}} "
            f"and on({JOB_KEY}) ({status_is('RUNNING')})", "{{job_name}} ({{region}})"))
        .height(9).span(12).unit("short").min(0).fill_opacity(10)
        .legend(legend(calcs=("lastNotNull",))))
    board.with_panel(
        timeseries.Panel().title("Runs: scheduled jobs").datasource(DATASOURCE)
        .description("Runs so far of each SCHEDULED job; a step is a new run. (A one-time job "
                     "runs once.)")
        .with_target(query(
            f"macie_classification_job_runs{{{JOBS}}} and on({JOB_KEY}) "
            f'macie_classification_job_info{{{JOBS}, job_type="SCHEDULED"}}',
            "{{job_name}} ({{region}})"))
        .height(9).span(12).unit("none").decimals(0)
        .legend(legend(calcs=("lastNotNull",))))


def pause_expiry(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Pause expiry: which paused jobs will Macie cancel soon?"))
    board.with_panel(
        bargauge.Panel().title("Time left before Macie cancels USER_PAUSED jobs")
        .datasource(DATASOURCE)
        .description("Macie cancels a job 30 days after a user paused it. Resume it before "
                     "then; red means less than a day left.")
        .with_target(query(
            f"(macie_classification_job_pause_expiry_timestamp_seconds{{{JOBS}}} - time()) "
            f"and on({JOB_KEY}) ({status_is('USER_PAUSED')})",
            "{{job_name}} ({{region}}, {{account_id}})", instant=True))
        .height(7).span(24).unit("dtdurations").min(0).max(30 * DAY)
        .thresholds(PAUSE_THRESHOLDS)
        .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def findings(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Findings: what sensitive data have the jobs found?"))
    per_job = [
        query(f"max by ({JOB_LABELS}) "
              f'(macie_classification_job_findings{{{JOBS}, severity="{severity}"}})',
              ref=ref, instant=True, as_table=True)
        for ref, severity in zip("ABC", SEVERITY_COLOURS, strict=True)
    ]
    board.with_panel(
        merged_table(
            "Findings per job by severity",
            "Findings each job produced, by severity; archived (suppressed) findings are not "
            "counted. Macie keeps findings for 90 days, so a count can fall.",
            per_job,
            {"job_name": "Job", "Value #A": "High", "Value #B": "Medium", "Value #C": "Low",
             "account_id": "Account", "region": "Region", "job_id": "Job ID"},
            ["Time"])
        .height(9).span(14)
        .sort_by([common.TableSortByFieldState().display_name("High").desc(True)])
        .overrides([
            column("High", ("unit", "none"),
                   ("thresholds", thresholds("green", (1, "red")).build()),
                   ("color", {"mode": "thresholds"}), ("custom.cellOptions", COLOURED)),
            column("Medium", ("unit", "none"),
                   ("thresholds", thresholds("green", (1, "orange")).build()),
                   ("color", {"mode": "thresholds"}), ("custom.cellOptions", COLOURED)),
            column("Low", ("unit", "none")),
        ]))
    board.with_panel(
        merged_table(
            "Jobs with the most High findings",
            "The ten jobs with the most High-severity findings (not archived): the data to "
            "review first.",
            [query(f"topk(10, max by ({JOB_LABELS}) "
                   f'(macie_classification_job_findings{{{JOBS}, severity="High"}}) > 0)',
                   instant=True, as_table=True)],
            {"job_name": "Job", "Value": "High findings", "account_id": "Account",
             "region": "Region", "job_id": "Job ID"},
            ["Time"])
        .height(9).span(10)
        .sort_by([common.TableSortByFieldState().display_name("High findings").desc(True)])
        .overrides([column("High findings", ("unit", "none"), ("color", {
            "mode": "fixed", "fixedColor": "red"}), ("custom.cellOptions", COLOURED))]))
    board.with_panel(
        timeseries.Panel().title("Findings by severity over time").datasource(DATASOURCE)
        .description("All the selected jobs' findings (not archived), by severity. A step up "
                     "in High is what MacieClassificationJobHighSeverityFindings alerts on.")
        .with_target(query(
            f"sum by (severity) (macie_classification_job_findings{{{JOBS}}})", "{{severity}}"))
        .height(7).span(24).unit("none").min(0).decimals(0)
        .legend(legend(cm.LegendPlacement.RIGHT, calcs=("lastNotNull",)))
        .overrides([fixed_colour(severity, colour)
                    for severity, colour in SEVERITY_COLOURS.items()]))

BUCKET_KEY = "account_id, region, bucket"
DISCOVERY_MAPPING = value_map({"0": ("DISABLED", "red"), "1": ("ENABLED", "green")})
SENSITIVITY_BANDS = (  # (legend, selector over the score, colour): Macie's bands
    ("sensitive (51-100)", ">= 51", "red"),
    ("not sensitive (1-49)", "> 0 < 50", "green"),
    ("not yet analysed (50)", "== 50", "#808080"),
    ("classification error (-1)", "== -1", "orange"),
)


def s3_buckets(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("S3 buckets: where is the sensitive data, and which buckets are "
                            "exposed?"))
    info = f"macie_s3_bucket_info{{{TARGETS}"
    board.with_panel(
        merged_table(
            "Exposed buckets per account",
            "Per account and region: buckets anyone can read (effective permission PUBLIC), "
            "shared with accounts outside the organisation (EXTERNAL), without default "
            "encryption (NONE), and whose policy allows unencrypted uploads.",
            [query(f'count by (account_id, region) ({info}, effective_permission="PUBLIC"}})',
                   ref="A", instant=True, as_table=True),
             query(f'count by (account_id, region) ({info}, shared_access="EXTERNAL"}})',
                   ref="B", instant=True, as_table=True),
             query(f'count by (account_id, region) ({info}, encryption_type="NONE"}})',
                   ref="C", instant=True, as_table=True),
             query("count by (account_id, region) "
                   f"(macie_s3_bucket_allows_unencrypted_uploads{{{TARGETS}}} == 1)",
                   ref="D", instant=True, as_table=True)],
            {"account_id": "Account", "region": "Region", "Value #A": "Public",
             "Value #B": "Shared externally", "Value #C": "Unencrypted",
             "Value #D": "Unencrypted uploads allowed"},
            ["Time"])
        .height(8).span(14)
        .overrides([column(name, ("unit", "none"),
                           ("thresholds", thresholds("green", (1, "red")).build()),
                           ("color", {"mode": "thresholds"}), ("custom.cellOptions", COLOURED))
                     for name in ("Public", "Shared externally", "Unencrypted",
                                  "Unencrypted uploads allowed")]))
    score = f"macie_s3_bucket_sensitivity_score{{{TARGETS}}}"
    board.with_panel(
        bargauge.Panel().title("Buckets by sensitivity").datasource(DATASOURCE)
        .description("Buckets by Macie's sensitivity score (automated sensitive data discovery): "
                     "sensitive 51-100, not sensitive 1-49, 50 not yet analysed, -1 a "
                     "classification error.")
        .targets([query(f"count({score} {selector})", legend_text, ref=ref, instant=True)
                  for ref, (legend_text, selector, _) in zip("ABCD", SENSITIVITY_BANDS,
                                                             strict=True)])
        .height(8).span(10).unit("none").min(0).decimals(0)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .overrides([fixed_colour(legend_text, colour)
                    for legend_text, _, colour in SENSITIVITY_BANDS]))
    exposed = (f'({info}, effective_permission="PUBLIC"}} or '
               f'{info}, shared_access="EXTERNAL"}})')
    board.with_panel(
        merged_table(
            "Riskiest buckets: public or shared, by sensitivity",
            "Buckets that are public or shared outside the organisation, the most sensitive "
            "first, with their High findings (MacieS3BucketPublicSensitive fires for the public "
            "ones scoring 51 or more).",
            [query(f"max by ({BUCKET_KEY}, effective_permission, shared_access) ({exposed})",
                   ref="A", instant=True, as_table=True),
             query(f"max by ({BUCKET_KEY}) ({score}) and on({BUCKET_KEY}) {exposed}",
                   ref="B", instant=True, as_table=True),
             query(f"max by ({BUCKET_KEY}) (macie_s3_bucket_findings{{{TARGETS}, "
                   f'severity="High"}}) and on({BUCKET_KEY}) {exposed}',
                   ref="C", instant=True, as_table=True)],
            {"bucket": "Bucket", "Value #B": "Sensitivity", "Value #C": "High findings",
             "effective_permission": "Public access", "shared_access": "Shared",
             "account_id": "Account", "region": "Region"},
            ["Time", "Value #A"])
        .height(8).span(24)
        .sort_by([common.TableSortByFieldState().display_name("Sensitivity").desc(True)])
        .overrides([
            column("Sensitivity", ("unit", "none"),
                   ("thresholds", thresholds("green", (50, "#808080"), (51, "red")).build()),
                   ("color", {"mode": "thresholds"}), ("custom.cellOptions", COLOURED)),
            column("High findings", ("unit", "none"),
                   ("thresholds", thresholds("green", (1, "red")).build()),
                   ("color", {"mode": "thresholds"}), ("custom.cellOptions", COLOURED)),
        ]))
    board.with_panel(
        merged_table(
            "Buckets Macie cannot analyse",
            "Buckets Macie reports an error for: ACCESS_DENIED (the bucket policy denies "
            "Macie) or BUCKET_COUNT_EXCEEDS_QUOTA (MacieS3BucketNotAnalyzable).",
            [query(f"max by ({BUCKET_KEY}, error_code) "
                   f"(macie_s3_bucket_analysis_error{{{TARGETS}}})",
                   instant=True, as_table=True)],
            {"bucket": "Bucket", "error_code": "Error", "account_id": "Account",
             "region": "Region"},
            ["Time", "Value"])
        .height(7).span(12))
    board.with_panel(
        merged_table(
            "Buckets monitored by nothing",
            "Buckets that neither automated sensitive data discovery nor any classification "
            "job monitors: nothing tells what they hold.",
            [query(f"count by ({BUCKET_KEY}) (macie_s3_bucket_monitored{{{TARGETS}}} == 0) "
                   "== 2", instant=True, as_table=True)],
            {"bucket": "Bucket", "account_id": "Account", "region": "Region"},
            ["Time", "Value"])
        .height(7).span(12))


def automated_discovery(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Automated discovery: is Macie scoring every account's buckets?"))
    board.with_panel(
        merged_table(
            "Automated discovery per account",
            "Whether automated sensitive data discovery is on for each account "
            "(MacieAutomatedDiscoveryDisabled fires when it was on within the last day).",
            [query("max by (account_id, region) (macie_automated_discovery_status"
                   f'{{{TARGETS}, status="ENABLED"}})', instant=True, as_table=True)],
            {"account_id": "Account", "region": "Region", "Value": "Automated discovery"},
            ["Time"])
        .height(8).span(10)
        .sort_by([common.TableSortByFieldState().display_name("Automated discovery")
                  .desc(False)])
        .overrides([column("Automated discovery", ("mappings", DISCOVERY_MAPPING),
                           ("custom.cellOptions", COLOURED))]))
    board.with_panel(
        merged_table(
            "Age of each bucket's last analysis",
            "How long ago automated discovery last analysed an object in each bucket "
            "(lastAutomatedDiscoveryTime), the oldest first: orange after a week, red after "
            "thirty days.",
            [query(f"time() - max by ({BUCKET_KEY}) "
                   f"(macie_s3_bucket_last_automated_discovery_timestamp_seconds{{{TARGETS}}})",
                   instant=True, as_table=True)],
            {"bucket": "Bucket", "Value": "Last analysed", "account_id": "Account",
             "region": "Region"},
            ["Time"])
        .height(8).span(14)
        .sort_by([common.TableSortByFieldState().display_name("Last analysed").desc(True)])
        .overrides([column("Last analysed", ("unit", "s"),
                           ("thresholds", thresholds("green", (7 * DAY, "orange"),
                                                     (30 * DAY, "red")).build()),
                           ("color", {"mode": "thresholds"}),
                           ("custom.cellOptions", COLOURED))]))


def usage(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Usage and quota: what does Macie cost, and who is at a quota?"))
    per_usage = "{{account_id}} · {{usage_type}} ({{region}})"
    cost = f"macie_usage_estimated_cost{{{TARGETS}}}"
    board.with_panel(
        bargauge.Panel().title("Estimated cost this month").datasource(DATASOURCE)
        .description("Month-to-date estimated cost per account and usage type (GetUsageStatistics)."
                     " A Macie administrator account reports its members' usage too; a member "
                     "that the exporter does not poll shows only when Account is All.")
        .with_target(query(
            f"sum by (account_id, region, usage_type) ({cost})", per_usage, instant=True))
        .height(9).span(12).unit("currencyUSD").min(0).decimals(2)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC_BY_NAME))
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    quota_key = "account_id, region, usage_type"
    board.with_panel(
        merged_table(
            "Quotas: who is at a quota?",
            "Each account's monthly quota per usage type, and whether it is reached: Macie "
            "pauses the jobs that would go past it until the next month (red: reached).",
            [query(f"max by ({quota_key}) (macie_usage_quota_reached{{{TARGETS}}})",
                   ref="A", instant=True, as_table=True),
             query(f"max by ({quota_key}) (macie_usage_quota_bytes{{{TARGETS}}})",
                   ref="B", instant=True, as_table=True),
             query(f"sum by ({quota_key}) ({cost}) and on({quota_key}) "
                   f"macie_usage_quota_reached{{{TARGETS}}}",
                   ref="C", instant=True, as_table=True)],
            {"account_id": "Account", "region": "Region", "usage_type": "Usage type",
             "Value #A": "Quota", "Value #B": "Quota size", "Value #C": "Cost this month"},
            ["Time"])
        .height(9).span(12)
        .sort_by([common.TableSortByFieldState().display_name("Quota").desc(True)])
        .overrides([
            column("Quota", ("mappings", QUOTA_MAPPING), ("custom.cellOptions", COLOURED)),
            column("Quota size", ("unit", "bytes")),
            column("Cost this month", ("unit", "currencyUSD"), ("decimals", 2)),
        ]))
    board.with_panel(
        timeseries.Panel().title("Estimated cost this month, over time").datasource(DATASOURCE)
        .description("How the month-to-date cost grows per account and usage type (it starts "
                     "again from zero each month).")
        .with_target(query(f"sum by (account_id, region, usage_type) ({cost})", per_usage))
        .height(7).span(24).unit("currencyUSD").min(0)
        .legend(legend(cm.LegendPlacement.RIGHT, calcs=("lastNotNull",))))


def organisation(board: dash.Dashboard) -> None:
    board.with_row(dash.Row(
        "Organisation: are all member accounts analysed, and is Macie on everywhere?"))
    members = f"macie_member_relationship_status{{{TARGETS}}}"
    board.with_panel(
        bargauge.Panel().title("Members by status").datasource(DATASOURCE)
        .description("Member accounts of the Macie administrator accounts, by relationship "
                     "status. Red ones are no longer analysed (MacieMemberNotEnabled); blue "
                     "ones are still joining.")
        .with_target(query(f"count by (status) ({members} == 1)", "{{status}}", instant=True))
        .height(8).span(8).unit("none").min(0).decimals(0)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .overrides([fixed_colour(status, colour)
                    for status, colour in MEMBER_STATUS_COLOURS.items()]))
    member_key = "account_id, region, member_account_id"
    board.with_panel(
        merged_table(
            "Member accounts",
            "Every member account of each Macie administrator account (ListMembers, including "
            "accounts that left), members that are not analysed first.",
            [query(f"max by ({member_key}, status) ({members} == 1)",
                   ref="A", instant=True, as_table=True),
             query(f'max by ({member_key}) (macie_member_relationship_status{{{TARGETS}, '
                   f'status="Enabled"}})', ref="B", instant=True, as_table=True)],
            {"member_account_id": "Member", "status": "Status", "Value #B": "Analysed",
             "account_id": "Administrator", "region": "Region"},
            ["Time", "Value #A"])
        .height(8).span(16)
        .sort_by([common.TableSortByFieldState().display_name("Analysed").desc(False)])
        .overrides([
            column("Status", ("mappings", MEMBER_STATUS_MAPPING),
                   ("custom.cellOptions", COLOURED)),
            column("Analysed", ("mappings", ANALYSED_MAPPING), ("custom.cellOptions", COLOURED)),
        ]))
    status_code = " or ".join(
        f'(max by (account_id, region) (macie_status{{{TARGETS}, status="{status}"}} == 1)'
        f"{'' if code == 1 else f' * {code}'})"
        for status, (code, _) in MACIE_STATUS_CODES.items())
    board.with_panel(
        statetimeline.Panel().title("Macie status per account and region")
        .datasource(DATASOURCE)
        .description("Macie's status from GetMacieSession: ENABLED, PAUSED (suspended: no job "
                     "runs, MacieSessionPaused) or DISABLED (Macie is not enabled there).")
        .with_target(query(status_code, "{{account_id}} {{region}}"))
        .height(7).span(24).mappings(MACIE_STATUS_MAPPING)
        .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .thresholds(thresholds("green"))
        .show_value(cm.VisibilityMode.AUTO).merge_values(True))


def exporter_health(board: dash.Dashboard) -> None:
    board.with_row(dash.Row("Exporter health: can we trust these numbers?"))
    per_target = "{{account_id}} {{region}}"
    board.with_panel(
        statetimeline.Panel().title("Refresh success per target").datasource(DATASOURCE)
        .description("Whether the last refresh of each target (account and region) "
                     "succeeded. A failing target keeps serving its last good data.")
        .with_target(query(f"macie_exporter_refresh_success{{{TARGETS}}}", per_target))
        .height(7).span(12).mappings(REFRESH_MAPPING)
        .thresholds(thresholds("red", (1, "green")))
        .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .show_value(cm.VisibilityMode.NEVER).merge_values(True))
    board.with_panel(
        timeseries.Panel().title("Data age").datasource(DATASOURCE)
        .description("Time since each target last refreshed successfully. It should stay "
                     "below the refresh interval (--refresh.interval).")
        .with_target(query(
            f"time() - macie_exporter_last_refresh_success_timestamp_seconds{{{TARGETS}}}",
            per_target))
        .height(7).span(12).unit("s").min(0)
        .thresholds(thresholds("green", (300, "orange"), (900, "red")))
        .thresholds_style(common.GraphThresholdsStyleConfig()
                          .mode(cm.GraphThresholdsStyleMode.LINE))
        .legend(legend(calcs=("lastNotNull", "max"))))
    board.with_panel(
        timeseries.Panel().title("Refresh duration").datasource(DATASOURCE)
        .description("How long the last refresh of each target took (list plus describes).")
        .with_target(query(f"macie_exporter_refresh_duration_seconds{{{TARGETS}}}", per_target))
        .height(7).span(8).unit("s").min(0).legend(legend(calcs=("lastNotNull", "max"))))
    board.with_panel(
        timeseries.Panel().title("API requests by outcome").datasource(DATASOURCE)
        .description("HTTP attempts to AWS per second, retries included, by operation and "
                     "outcome. Throttling is red; any other non-success outcome is an error "
                     "code or a client error.")
        .with_target(query(
            f"sum by (operation, outcome) "
            f"(rate(macie_exporter_api_requests_total{{{TARGETS}}}[$__rate_interval]))",
            "{{operation}} {{outcome}}"))
        .height(7).span(8).unit("reqps").min(0).fill_opacity(30)
        .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        .legend(legend(calcs=("mean", "max")))
        .override_by_regexp(".*Throttl.*", [dm.DynamicConfigValue(
            id_val="color", value={"mode": "fixed", "fixedColor": "red"})]))
    board.with_panel(
        timeseries.Panel().title("Describe failures").datasource(DATASOURCE)
        .description("Jobs whose DescribeClassificationJob failed in the last refresh; they "
                     "keep their last known values.")
        .with_target(query(f"macie_exporter_describe_failures{{{TARGETS}}}", per_target))
        .height(7).span(8).unit("none").min(0).decimals(0)
        .thresholds(thresholds("green", (1, "red")))
        .legend(legend(calcs=("lastNotNull", "max"))))


def variables(board: dash.Dashboard) -> None:
    board.with_variable(
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))

    def pick(name: str, label: str, expr: str) -> dash.QueryVariable:
        return (dash.QueryVariable(name).label(label).datasource(DATASOURCE)
                .query(expr)
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
                .multi(True).include_all(True).all_value(".*")
                .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"])))

    board.with_variable(pick(
        "account", "Account", "label_values(macie_exporter_refresh_success, account_id)"))
    board.with_variable(pick(
        "region", "Region",
        'label_values(macie_exporter_refresh_success{account_id=~"$account"}, region)'))
    board.with_variable(pick(
        "job", "Job",
        'label_values(macie_classification_job_info{account_id=~"$account", '
        'region=~"$region"}, job_name)'))


def build() -> dm.Dashboard:
    board = (
        dash.Dashboard("Amazon Macie classification jobs").uid(UID)
        .description("Macie sensitive-data discovery jobs from macie-exporter: status, progress, "
                     "pause expiry, findings, S3 buckets and automated discovery, usage and "
                     "quotas, member accounts and the exporter's own health.")
        .tags(["macie", "aws", "security", "prometheus"])
        .editable().tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now").refresh("1m").timezone("browser")
    )
    variables(board)
    overview(board)
    jobs_table(board)
    progress(board)
    pause_expiry(board)
    findings(board)
    s3_buckets(board)
    automated_discovery(board)
    usage(board)
    organisation(board)
    exporter_health(board)
    model = board.build()
    for variable in model.templating.list_val or [] if model.templating else []:
        # The SDK fills interval-variable settings into every variable; @grafana/schema's
        # VariableModel has no such fields.
        variable.auto = variable.auto_min = variable.auto_count = None
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return model


def render() -> str:
    """The dashboard as the committed JSON text."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help=f"rewrite {OUTPUT.name}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        OUTPUT.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
