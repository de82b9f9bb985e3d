"""``retire``: phase 8. Drain and delete a deployment, mark the model versions it served retired, remove their
aliases unless another live deployment serves them, and free the model cache entries nothing references."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.naming import name_run, run_name
from tasks.retire import drain_and_delete, prune_cache, remove_aliases, retire_versions


@flow(name="retire", flow_run_name="retire-{name}")
def retire(name: str, namespace: str = "default", state_dir: str | None = None) -> list[str]:
    """Retire the InferenceService ``name``; returns the versions marked retired (``model/version``). Running
    it again is a harmless no-op."""
    logger = get_run_logger()
    drained = drain_and_delete(name, namespace, state=state_dir)
    if drained.serving is not None:
        name_run(f"retire-{run_name(name, drained.serving[1])}")
    versions, still_served = retire_versions(name, namespace, drained.serving, state=state_dir)
    removed = remove_aliases(versions, state=state_dir)
    pruned = prune_cache(state=state_dir)
    retired = [f"{v.name}/{v.version}" for v in versions]
    logger.info("retire: %s/%s %s; versions retired: %s; aliases removed: %s; cache: %d entries, %d bytes freed",
                namespace, name, "deleted" if drained.deleted else "was already gone", ", ".join(retired) or "none",
                ", ".join(removed) or "none", len(pruned.entries), pruned.bytes_freed)
    lines = [
        f"# {namespace}/{name} retired" if drained.deleted else f"# {namespace}/{name} was already gone",
        "",
        "| step | result |",
        "|---|---|",
        f"| drained | {drained.in_flight_before} request(s) in flight at the delete, {drained.in_flight_after} left "
        f"after {drained.seconds:.1f} s |",
        f"| deleted | {', '.join(drained.deleted) or 'nothing (already gone)'} |",
        f"| versions marked retired | {', '.join(retired) or 'none'} |",
        f"| aliases removed | {', '.join(removed) or 'none'} |",
        f"| versions kept (another live deployment serves them; aliases stay) | "
        f"{', '.join(f'{v.name}/{v.version}' for v in still_served) or 'none'} |",
        f"| cache entries pruned | {len(pruned.entries)} ({pruned.bytes_freed} bytes freed) |",
        f"| storage URIs forgotten | {', '.join(f'`{u}`' for u in pruned.uris) or 'none'} |",
    ]
    create_markdown_artifact(key=f"retire-{namespace}-{name}".lower(), markdown="\n".join(lines),
                             description=f"retire {namespace}/{name}")
    return retired
