"""A router's budgets: each budgeted tenant's spend account and each budgeted objective's
pacer, the pacing multiplier a decision is priced at, and what feedback charges them.

They live apart from the Router so that routing reads as its steps; the Router keeps the
public methods (``pacer``, ``restore_budgets``, ``budget_status`` ...) and delegates here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from banditroute.budgets import BudgetStatus, TenantBudget, period_start
from banditroute.config import Settings
from banditroute.objectives import BudgetPacer, Objective
from banditroute.outcomes import Fragments
from banditroute.tenancy import Tenant


class BudgetBook:
    """Tenant budgets and objective pacers, each created on first use and kept across
    configuration reloads (their spend and multipliers carry over)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._budgets: dict[str, TenantBudget] = {}
        self._pacers: dict[str, BudgetPacer] = {}

    def budget(self, tenant: Tenant) -> TenantBudget | None:
        """The tenant's budget account (None for a tenant without a budget)."""
        if tenant.budget is None:
            return None
        budget = self._budgets.get(tenant.name)
        if budget is None:
            budget = self._budgets.setdefault(tenant.name, TenantBudget(tenant.name, tenant.budget))
        return budget

    def pacer(self, objective: Objective) -> BudgetPacer | None:
        """The budget pacer of an objective with a budget (created on first use)."""
        if objective.budget_usd is None:
            return None
        pacer = self._pacers.get(objective.name)
        if pacer is None:
            pacer = BudgetPacer(objective.budget_usd, objective.pacing_rate, objective.quality)
            self._pacers[objective.name] = pacer
        return pacer

    def multiplier(self, objective: Objective, budget: TenantBudget | None) -> float:
        """The extra cost weight (reward points per USD) a decision is priced at and its
        reward is charged: the objective's pacer's plus the tenant's budget's."""
        pacer = self.pacer(objective)
        return (0.0 if pacer is None else pacer.lam) + (
            0.0 if budget is None else budget.multiplier
        )

    def reconfigure(self, settings: Settings) -> None:
        """Apply reloaded settings to the budgets and pacers there are, keeping their spend
        and multipliers."""
        for name, budget in self._budgets.items():
            tenant = settings.access.tenants.get(name)
            if tenant is not None and tenant.budget is not None:
                budget.reconfigure(tenant.budget)
        for name, pacer in self._pacers.items():
            objective = settings.objectives.get(name)
            if objective is not None and objective.budget_usd is not None:
                pacer.budget_usd = objective.budget_usd
                pacer.rate = objective.pacing_rate
                pacer.quality_weight = objective.quality

    def reward(
        self,
        objective: Objective,
        fragments: Fragments,
        tenant: Tenant,
        *,
        first: bool,
        charge: bool,
    ) -> float:
        """Reward under the objective plus the pacing surcharges of the objective's and the
        tenant's budgets. The first feedback of a decision is a request for the pacers;
        ``charge`` (the first feedback naming each served model: a fallback's call costs as
        well) adds the cost to the tenant's spend."""
        pacer = self.pacer(objective)
        budget = self.budget(tenant)
        reward = objective.reward(fragments, extra_cost_weight=self.multiplier(objective, budget))
        cost = fragments.cost_usd or 0.0
        if first and pacer is not None:
            pacer.observe(cost)
        if charge and budget is not None:
            budget.record(cost, self._clock(), new_request=first)
        return reward

    def restore_budgets(
        self, settings: Settings, spend: Callable[[str, float], tuple[float, int]]
    ) -> int:
        """Reload each budgeted tenant's spend in its current period; ``spend(tenant, since)``
        returns (USD, requests) from the log. Returns how many tenants were restored."""
        now = self._clock()
        restored = 0
        for tenant in settings.access.tenants.values():
            budget = self.budget(tenant)
            if budget is None:
                continue
            usd, requests = spend(tenant.name, period_start(budget.settings.period, now))
            budget.restore(usd, requests, now)
            restored += 1
        return restored

    def restore_pacers(
        self, settings: Settings, first_costs: Callable[..., Iterable[float]]
    ) -> int:
        """Rebuild every budget pacer (each budgeted objective's and each tenant's with a
        pacing target) by replaying, in order, the cost of every logged decision's first
        feedback under that objective or of that tenant (``first_costs(objective=NAME)``,
        ``first_costs(tenant=NAME)``, from the log): the multiplier continues where it stood
        instead of restarting from zero and overspending while it climbs back. Returns how
        many costs were replayed."""
        pacers: list[tuple[BudgetPacer | None, dict[str, str]]] = [
            (self.pacer(objective), {"objective": objective.name})
            for objective in settings.objectives.values()
        ]
        for tenant in settings.access.tenants.values():
            budget = self.budget(tenant)
            pacers.append((None if budget is None else budget.pacer, {"tenant": tenant.name}))
        replayed = 0
        for pacer, whose in pacers:
            if pacer is None:
                continue
            for cost in first_costs(**whose):
                pacer.observe(cost)
                replayed += 1
        return replayed

    def take_spend(self) -> dict[str, tuple[float, float, int]]:
        """Each budgeted tenant's (period start, spend, requests) recorded here since the last
        call, for the other serving processes (``server.workers`` > 1)."""
        now = self._clock()
        taken = {name: budget.take_local(now) for name, budget in list(self._budgets.items())}
        return {name: t for name, t in taken.items() if t[1] or t[2]}

    def add_spend(
        self, tenants: Mapping[str, Tenant], spend: Mapping[str, tuple[float, float, int]]
    ) -> None:
        """Count what other serving processes recorded (from their ``take_spend``) against
        these budgets, so a hard cap holds for the whole server."""
        now = self._clock()
        for name, (start, usd, requests) in spend.items():
            tenant = tenants.get(name)
            budget = None if tenant is None else self.budget(tenant)
            if budget is not None:
                budget.add_remote(start, usd, requests, now)

    def status(self, tenant: Tenant) -> BudgetStatus | None:
        """The tenant's budget figures for the current period (None without a budget)."""
        budget = self.budget(tenant)
        return None if budget is None else budget.status(self._clock())


__all__ = ["BudgetBook"]
