"""Stage `validate`: every setting checked before any training, and each run defense resolved.

It depends on the whole params.yaml and on the registries, so it runs
first whenever either changes, and a wrong key or value anywhere stops
`dvc repro` here with one line per problem, before any model trains. It
writes what later stages need from the check, and nothing else, so it
reruns often but reruns nothing downstream unless that changed:

- `data/validated/requirements.json`: with a given model (`target.model`),
  which run defenses must retrain its architecture with the batched
  trainer (prepare refuses them at once for a model the trainer cannot
  rebuild);
- `data/validated/defenses/<name>.json` for each defense in
  `defense.run`: its class, its validated settings and the fingerprint of
  its code. The defense's stages read it instead of the registry, so
  adding a defense, or editing another one, never reruns them.
"""

from __future__ import annotations

from pipeline.checks import CheckedParams, check
from pipeline.core.imports import fingerprint, static_closure
from pipeline.core.io import atomic_path, json_text, write_json
from pipeline.stages.common import (
    REQUIREMENTS,
    ROOT,
    VALIDATED_DEFENSES,
    ScopedParams,
    main,
)

PARAMS = ()  # it reads the whole file, a declared dependency of its own (deps: params.yaml)


def requirements(checked: CheckedParams) -> dict[str, dict[str, list[str]]]:
    """What the run's settings require of a given model (`target.model`), for the prepare stage.

    Only a given model can be one the batched trainer cannot rebuild, so
    without one nothing is listed: adding or dropping a defense then leaves
    this file as it was and never reruns prepare.
    """
    needing = checked.needing_batched_trainer()
    given = checked.params.target.model is not None
    return {"defenses_needing_the_batched_trainer": needing if given else {key: [] for key in needing}}


def defense_record(name: str, entry: str, settings: object) -> dict[str, object]:
    """A run defense as its stages load it: class entry, settings, and its code's fingerprint."""
    module = entry.split(":")[0]
    return {
        "name": name,
        "entry": entry,
        "settings": settings.model_dump(mode="json"),
        "code": fingerprint(ROOT.resolve(), static_closure(ROOT.resolve(), module)),
    }


def run(params: ScopedParams) -> None:
    checked = check(params.whole_file())
    write_json(REQUIREMENTS, requirements(checked))
    with atomic_path(VALIDATED_DEFENSES) as folder:  # written whole: a defense dropped from defense.run leaves no file
        folder.mkdir()
        for name in checked.audited_defenses():
            (folder / f"{name}.json").write_text(json_text(defense_record(name, *checked.defenses[name])))
    defenses = ", ".join(checked.audited_defenses()) or "none"
    print(f"params.yaml: valid ({len(checked.attack.enabled)} attacks, defenses: {defenses})")


if __name__ == "__main__":
    main(run, PARAMS)
