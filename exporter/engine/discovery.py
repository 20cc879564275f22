"""Targets from AWS Organizations: every ACTIVE account, in each configured region."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from exporter.aws.errors import ApiError
from exporter.aws.operations import Operation
from exporter.aws.session import PARTITION_REGIONS, Aws, partition_of
from exporter.aws.target import AwsTarget, Pages
from exporter.engine.fleet import Fleet
from exporter.engine.store import SnapshotStore
from exporter.logs import fields
from exporter.model import DiscoveryConfig, TargetConfig, TargetKey

log = logging.getLogger(__name__)

# The largest page ListAccounts accepts.
LIST_ACCOUNTS = Operation("organizations", "ListAccounts", "organizations:ListAccounts",
                          page_size=20, items="Accounts")


def list_organization_accounts(aws: Aws, key: TargetKey, role_arn: str | None,
                               external_id: str | None) -> list[tuple[str, str]]:
    """(account id, status) of every account of the organisation (ListAccounts, every page),
    asked with the discovery role or the exporter's own credentials; calls counted under
    `key`."""
    caller = AwsTarget(aws, key, role_arn, external_id)
    pages = Pages(LIST_ACCOUNTS, {})
    accounts: list[tuple[str, str]] = []
    while (page := caller.next_page(pages)) is not None:
        for account in page:
            account_id, status = account.get("Id"), account.get("Status")
            if isinstance(account_id, str):
                accounts.append((account_id, str(status or "")))
    return accounts


class OrganizationsDiscovery:
    """Lists the organisation's accounts and hands the fleet its targets; a failure keeps the
    last discovered targets."""

    def __init__(self, aws: Aws, config: DiscoveryConfig, regions: Sequence[str], fleet: Fleet,
                 store: SnapshotStore, clock: Callable[[], float] = time.time) -> None:
        self._aws = aws
        self._store = store
        self._orgs = config.organizations
        self._regions = tuple(regions)
        self._fleet = fleet
        self._clock = clock
        self._partition = partition_of(self._orgs.role_arn)
        discovery_account = self._orgs.role_arn.split(":")[4] if self._orgs.role_arn else ""
        # ListAccounts calls are counted under the discovery account (empty: own credentials).
        self._key = TargetKey(discovery_account, PARTITION_REGIONS.get(self._partition,
                                                                       "us-east-1"))
        self._lock = threading.Lock()
        self._closed = False
        fleet.status.discovery_enabled = True

    def close(self) -> None:
        """Hand the fleet nothing more (a reload replaced or removed discovery); a discovery
        under way ends without touching it."""
        with self._lock:
            self._closed = True

    def targets(self, accounts: Sequence[tuple[str, str]]) -> list[TargetConfig]:
        """A target per ACTIVE, not excluded account and region, assuming the member role."""
        role = f"arn:{self._partition}:iam::{{account}}:role/{self._orgs.member_role_name}"
        active = sorted({account for account, status in accounts
                         if status == "ACTIVE" and account not in self._orgs.exclude_accounts})
        return [TargetConfig(region, role.format(account=account), self._orgs.member_external_id)
                for account in active for region in self._regions]

    def discover(self) -> bool:
        """Discover once and reconcile the fleet; True on success."""
        try:
            return self._discover()
        finally:
            self._store.known()

    def _discover(self) -> bool:
        status = self._fleet.status
        try:
            accounts = list_organization_accounts(self._aws, self._key, self._orgs.role_arn,
                                                  self._orgs.external_id)
        except ApiError as err:
            status.discovery_success = False
            extra = fields(operation=err.operation, error_code=err.code, error=err.message,
                           missing_permission=err.missing_permission or "",
                           targets_kept=status.targets)
            log.error("discovery failed; the last discovered targets are kept", extra=extra)
            return False
        except Exception:  # a bug must not stop later discoveries
            status.discovery_success = False
            log.exception("discovery crashed; the last discovered targets are kept")
            return False
        targets = self.targets(accounts)
        with self._lock:
            if self._closed:
                return False
            added, removed = self._fleet.reconcile(targets)
        status.discovery_success = True
        status.discovery_last_success = self._clock()
        log.info("discovered the organisation", extra=fields(
            accounts=len(accounts), active_targets=len(targets), added=added, removed=removed,
            targets=status.targets))
        return True
