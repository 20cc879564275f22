"""A simulated Macie API on loopback, speaking the real wire formats botocore parses.

Macie (REST-JSON, as botocore's macie2 model has it): `POST /jobs/list`
(ListClassificationJobs, `nextToken` paging), `GET /jobs/{jobId}` (DescribeClassificationJob),
`GET /macie` (GetMacieSession), `POST /findings/statistics` (GetFindingStatistics),
`POST /usage/statistics` (GetUsageStatistics, paged) and `GET /members` (ListMembers, paged);
ISO-8601 timestamps; errors as an HTTP status plus `x-amzn-ErrorType`. STS (query protocol,
XML): GetCallerIdentity and AssumeRole, with credentials that expire. AWS Organizations (JSON
1.1, `POST /` with `X-Amz-Target`): ListAccounts, paged. CloudWatch Logs (JSON 1.1):
FilterLogEvents, paged, over the log groups written with `put_log_events` (Macie's job log
events: `macie_job_event`). Jobs, findings, usage, members, log groups and Macie's status
(ENABLED, PAUSED, or DISABLED: "Macie is not enabled") are kept per (account, region); the
region comes from the SigV4 credential scope and the account from the access key (an
AssumeRole key: the role's account; any other key: `account_id`).

Page sizes: ListClassificationJobs up to 200 (default 100); ListMembers up to 25 (the model's
maximum, and the default); ListAccounts up to 20 (the model's maximum, and the default);
FilterLogEvents up to 10,000 events and 1 MB (the model's maximum, and AWS's page);
GetUsageStatistics up to 50 (default 50) and GetFindingStatistics `size` up to 1000 (default
1000): the model gives these two no maximum, so the bounds are the simulator's own, and larger
values are answered ValidationException.

Requests are counted per operation and per (operation, account, region); for a caller in
another process, `GET /_simulator/requests` answers the counts as JSON,
`POST /_simulator/reset` zeroes them, and `POST /_simulator/jobs` puts jobs
(`{"region": ..., "account_id": ..., "jobs": [make_job(...), ...]}`).

Modules: `core` (the `Simulator`: state, counters, HTTP server), `routes` (the routing table,
`ROUTES`: operation → service, handler and, for Macie, method and path), one module per service
area with its handlers (`jobs`, `session`, `findings`, `usage`, `members`, `sts`,
`organizations`, `logs`), and `wire` (the request, answers and errors in each wire format,
page tokens, timestamps). `served_operations()` (also `Simulator.OPERATIONS`) lists what is served.

Used by `--demo` (the story is in `exporter.demo.story`) and by the tests, which add fault
injection through `_intercept` (`tests/simfaults.py`); benchmarks fill it with synthetic fleets
(`benchmarks/fleets.py`).
"""

from exporter.demo.simulator.buckets import BUCKETS_PAGE_SIZE, DISCOVERY_PAGE_SIZE, make_bucket
from exporter.demo.simulator.core import Evolve, Simulator
from exporter.demo.simulator.findings import (
    FINDING_TYPE,
    GROUP_BY,
    MAX_STATISTICS_SIZE,
    SEVERITIES,
    SEVERITY_SCORES,
)
from exporter.demo.simulator.jobs import MAX_PAGE_SIZE, make_job, summary_of
from exporter.demo.simulator.logs import (
    LOG_EVENTS_PAGE_BYTES,
    LOG_EVENTS_PAGE_SIZE,
    LOGS_TARGET_PREFIX,
    MACIE_LOG_GROUP,
    macie_job_event,
)
from exporter.demo.simulator.members import (
    MEMBERS_PAGE_SIZE,
    NOT_ASSOCIATED,
    RELATIONSHIP_STATUSES,
)
from exporter.demo.simulator.organizations import (
    ACCOUNT_STATUSES,
    ACCOUNTS_PAGE_SIZE,
    ORGANIZATIONS_TARGET_PREFIX,
)
from exporter.demo.simulator.routes import (
    ORGANIZATIONS_OPERATIONS,
    ROUTES,
    STS_OPERATIONS,
    Operation,
    Rest,
    error_answer,
    served_operations,
)
from exporter.demo.simulator.session import MACIE_STATUSES, NOT_ENABLED
from exporter.demo.simulator.usage import (
    DEFAULT_USAGE,
    TIME_RANGES,
    USAGE_PAGE_SIZE,
    USAGE_REPORTED,
    USAGE_TYPES,
)
from exporter.demo.simulator.wire import (
    DAY,
    DEFAULT_ACCOUNT,
    Answer,
    Call,
    Handler,
    Service,
    iso,
    json11_error,
    json_answer,
    json_error,
    xml_error,
)

__all__ = [
    "ACCOUNTS_PAGE_SIZE",
    "ACCOUNT_STATUSES",
    "BUCKETS_PAGE_SIZE",
    "DAY",
    "DEFAULT_ACCOUNT",
    "DEFAULT_USAGE",
    "DISCOVERY_PAGE_SIZE",
    "FINDING_TYPE",
    "GROUP_BY",
    "LOGS_TARGET_PREFIX",
    "LOG_EVENTS_PAGE_BYTES",
    "LOG_EVENTS_PAGE_SIZE",
    "MACIE_LOG_GROUP",
    "MACIE_STATUSES",
    "MAX_PAGE_SIZE",
    "MAX_STATISTICS_SIZE",
    "MEMBERS_PAGE_SIZE",
    "NOT_ASSOCIATED",
    "NOT_ENABLED",
    "ORGANIZATIONS_OPERATIONS",
    "ORGANIZATIONS_TARGET_PREFIX",
    "RELATIONSHIP_STATUSES",
    "ROUTES",
    "SEVERITIES",
    "SEVERITY_SCORES",
    "STS_OPERATIONS",
    "TIME_RANGES",
    "USAGE_PAGE_SIZE",
    "USAGE_REPORTED",
    "USAGE_TYPES",
    "Answer",
    "Call",
    "Evolve",
    "Handler",
    "Operation",
    "Rest",
    "Service",
    "Simulator",
    "error_answer",
    "iso",
    "json11_error",
    "json_answer",
    "json_error",
    "macie_job_event",
    "make_bucket",
    "make_job",
    "served_operations",
    "summary_of",
    "xml_error",
]
