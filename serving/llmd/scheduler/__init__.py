"""The LLM-D scheduler: flow control, then filters -> weighted scorers -> picker, with P/D and session
affinity, configured in YAML. Pure: the router feeds it pod state and requests, it returns decisions.
"""

from .config import DEFAULT_CONFIG_PATH, SchedulerConfig, load_config, loads_config, parse_config
from .filters import CapacityFilter, Filter, HealthyFilter, LowQueueFilter, RoleFilter
from .flow_control import (
    Admit,
    FlowControlConfig,
    FlowController,
    Queue,
    Reject,
    free_slots,
    is_saturated,
    pod_saturated,
)
from .picker import MaxScorePicker, Picker
from .profile import Scheduler, SchedulerProfile
from .scorers import (
    ApproximatePrefixScorer,
    BlockLRU,
    CapacityAwarePrefixScorer,
    KVUtilizationScorer,
    LoadScorer,
    PodBlockTracker,
    PrecisePrefixScorer,
    QueueScorer,
    Scorer,
    WorkingSet,
)
from .types import (
    Decision,
    NoCapacity,
    NoPods,
    PodState,
    Priority,
    SchedRequest,
    SchedulerConfigError,
    SchedulerError,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Admit",
    "ApproximatePrefixScorer",
    "BlockLRU",
    "CapacityAwarePrefixScorer",
    "CapacityFilter",
    "Decision",
    "Filter",
    "FlowControlConfig",
    "FlowController",
    "HealthyFilter",
    "KVUtilizationScorer",
    "LoadScorer",
    "LowQueueFilter",
    "MaxScorePicker",
    "NoCapacity",
    "NoPods",
    "Picker",
    "PodBlockTracker",
    "PodState",
    "PrecisePrefixScorer",
    "Priority",
    "Queue",
    "QueueScorer",
    "Reject",
    "RoleFilter",
    "SchedRequest",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerConfigError",
    "SchedulerError",
    "SchedulerProfile",
    "Scorer",
    "WorkingSet",
    "free_slots",
    "is_saturated",
    "load_config",
    "loads_config",
    "parse_config",
    "pod_saturated",
]
