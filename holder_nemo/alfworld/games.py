"""Build small ALFWorld games offline, one per task type, in the real dataset's folder layout.

The real ALFWorld games (``json_2.1.1``) need a download; tests and smoke runs cannot make it. The ``alfworld`` wheel
ships everything else: the PDDL domain (``ALFRED_PDDL_PATH``), the TextWorld grammar (``ALFRED_TWL2_PATH``) and the
goal library (``alfworld.gen.goal_library``). A game here is a hand-written PDDL problem for one small kitchen-office
room plus the real goal for its task type, written as the three files alfworld's ``AlfredTWEnv`` reads::

    ROOT/<split>/<task_type>-<Obj>-None-<Recep>-<n>/trial_T0_<k>/{initial_state.pddl, traj_data.json, game.tw-pddl}

The folder name keeps verl-agent's per-task success metrics working (they substring-match the task type in the game
path). ``alfworld`` is imported lazily: it is the optional extra ``holder_nemo[alfworld]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# verl-agent / ALFWorld task-type ids (``env.task_types``) and the paper's Table 3 column names.
TASK_TYPES: dict[int, str] = {
    1: "pick_and_place_simple",
    2: "look_at_obj_in_light",
    3: "pick_clean_then_place_in_recep",
    4: "pick_heat_then_place_in_recep",
    5: "pick_cool_then_place_in_recep",
    6: "pick_two_obj_and_place",
}

# Receptacles of the one room every game uses: (PDDL id, type, openable). ``Sink..._bar_SinkBasin`` demangles to
# "sinkbasin 1" exactly as in the real data.
_RECEPTACLES: tuple[tuple[str, str, bool], ...] = (
    ("CounterTop_bar_1", "CounterTop", False),
    ("Fridge_bar_1", "Fridge", True),
    ("Microwave_bar_1", "Microwave", True),
    ("Sink_bar_1_bar_SinkBasin", "SinkBasin", False),
    ("Cabinet_bar_1", "Cabinet", True),
    ("Shelf_bar_1", "Shelf", False),
    ("Desk_bar_1", "Desk", False),
)


@dataclass(frozen=True)
class PlacedObject:
    """One object of a game: PDDL id (``Name_bar_<n>``), type name, the receptacle id it starts in, properties."""

    pddl_id: str
    otype: str
    receptacle: str
    properties: tuple[str, ...] = ("pickupable",)


@dataclass(frozen=True)
class GameSpec:
    """A small game: task type, ALFRED ``pddl_params`` targets, objects, and a scripted winning command sequence."""

    task_type: str
    object_target: str
    parent_target: str
    objects: tuple[PlacedObject, ...]
    expert_plan: tuple[str, ...]
    toggle_target: str = ""
    task_template: int = 0  # index into the goal library's text templates (the real data picks one at random)
    extra: dict = field(default_factory=dict)

    @property
    def folder_name(self) -> str:
        target = self.toggle_target if self.task_type == "look_at_obj_in_light" else self.parent_target
        return f"{self.task_type}-{self.object_target}-None-{target}-1"


# One spec per task type. The expert plans are the planner's optimal plans, written out so a test fails if the
# domain, grammar or demangling ever changes the command wording the model has to produce.
SPECS: dict[str, GameSpec] = {
    "pick_and_place_simple": GameSpec(
        task_type="pick_and_place_simple",
        object_target="Apple",
        parent_target="Fridge",
        objects=(PlacedObject("Apple_bar_1", "Apple", "CounterTop_bar_1", ("pickupable", "coolable", "heatable")),),
        expert_plan=(
            "go to countertop 1",
            "take apple 1 from countertop 1",
            "go to fridge 1",
            "open fridge 1",
            "move apple 1 to fridge 1",
        ),
    ),
    "look_at_obj_in_light": GameSpec(
        task_type="look_at_obj_in_light",
        object_target="Book",
        parent_target="",
        toggle_target="DeskLamp",
        objects=(
            PlacedObject("Book_bar_1", "Book", "Shelf_bar_1"),
            PlacedObject("DeskLamp_bar_1", "DeskLamp", "Desk_bar_1", ("toggleable",)),
        ),
        expert_plan=("go to shelf 1", "take book 1 from shelf 1", "go to desk 1", "use desklamp 1"),
    ),
    "pick_clean_then_place_in_recep": GameSpec(
        task_type="pick_clean_then_place_in_recep",
        object_target="Mug",
        parent_target="Cabinet",
        objects=(PlacedObject("Mug_bar_1", "Mug", "CounterTop_bar_1", ("pickupable", "cleanable")),),
        expert_plan=(
            "go to countertop 1",
            "take mug 1 from countertop 1",
            "go to sinkbasin 1",
            "clean mug 1 with sinkbasin 1",
            "go to cabinet 1",
            "open cabinet 1",
            "move mug 1 to cabinet 1",
        ),
    ),
    "pick_heat_then_place_in_recep": GameSpec(
        task_type="pick_heat_then_place_in_recep",
        object_target="Potato",
        parent_target="CounterTop",
        objects=(PlacedObject("Potato_bar_1", "Potato", "Fridge_bar_1", ("pickupable", "heatable", "coolable")),),
        expert_plan=(
            "go to fridge 1",
            "open fridge 1",
            "take potato 1 from fridge 1",
            "go to microwave 1",
            "heat potato 1 with microwave 1",
            "go to countertop 1",
            "move potato 1 to countertop 1",
        ),
    ),
    "pick_cool_then_place_in_recep": GameSpec(
        task_type="pick_cool_then_place_in_recep",
        object_target="Tomato",
        parent_target="Shelf",
        objects=(PlacedObject("Tomato_bar_1", "Tomato", "CounterTop_bar_1", ("pickupable", "coolable", "heatable")),),
        expert_plan=(
            "go to countertop 1",
            "take tomato 1 from countertop 1",
            "go to fridge 1",
            "cool tomato 1 with fridge 1",
            "go to shelf 1",
            "move tomato 1 to shelf 1",
        ),
    ),
    "pick_two_obj_and_place": GameSpec(
        task_type="pick_two_obj_and_place",
        object_target="CreditCard",
        parent_target="Desk",
        # AlfredDemangler numbers same-named entities by its own ordering: _bar_1 here shows as "creditcard 2".
        objects=(
            PlacedObject("CreditCard_bar_1", "CreditCard", "CounterTop_bar_1"),
            PlacedObject("CreditCard_bar_2", "CreditCard", "Shelf_bar_1"),
        ),
        expert_plan=(
            "go to countertop 1",
            "take creditcard 2 from countertop 1",
            "go to desk 1",
            "move creditcard 2 to desk 1",
            "go to shelf 1",
            "take creditcard 1 from shelf 1",
            "go to desk 1",
            "move creditcard 1 to desk 1",
        ),
    ),
}


def _location(receptacle_id: str) -> str:
    return "loc_bar_" + receptacle_id.split("_bar_")[0].lower()


def pddl_problem(spec: GameSpec) -> str:
    """The ``initial_state.pddl`` text of ``spec``: the room, its objects, permissive ``canContain`` and the goal."""
    import alfworld.gen.goal_library as glib

    object_types = sorted({o.otype for o in spec.objects})
    receptacle_types = sorted({rtype for _, rtype, _ in _RECEPTACLES})
    locations = ["loc_bar_start"] + [_location(rid) for rid, _, _ in _RECEPTACLES]
    receptacle_of = {rid: rtype for rid, rtype, _ in _RECEPTACLES}
    objects_decl = " ".join(
        ["agent1 - agent"]
        + [f"{t}Type - otype" for t in object_types]
        + [f"{t}Type - rtype" for t in receptacle_types]
        + [f"{o.pddl_id} - object" for o in spec.objects]
        + [f"{rid} - receptacle" for rid, _, _ in _RECEPTACLES]
        + [f"{loc} - location" for loc in locations]
    )
    init = ["(atLocation agent1 loc_bar_start)"]
    for rid, rtype, openable in _RECEPTACLES:
        init += [f"(receptacleType {rid} {rtype}Type)", f"(receptacleAtLocation {rid} {_location(rid)})"]
        if openable:
            init.append(f"(openable {rid})")
    for obj in spec.objects:
        if obj.receptacle not in receptacle_of:
            raise ValueError(f"object {obj.pddl_id}: unknown receptacle {obj.receptacle!r}")
        init += [
            f"(objectType {obj.pddl_id} {obj.otype}Type)",
            f"(inReceptacle {obj.pddl_id} {obj.receptacle})",
            f"(objectAtLocation {obj.pddl_id} {_location(obj.receptacle)})",
        ]
        init += [f"({prop} {obj.pddl_id})" for prop in obj.properties]
    # PutObject needs canContain; without it "move X to Y" never becomes admissible.
    init += [f"(canContain {rt}Type {ot}Type)" for rt in receptacle_types for ot in object_types]
    goal = glib.gdict[spec.task_type]["pddl"].format(
        obj=spec.object_target, recep=spec.parent_target, toggle=spec.toggle_target, mrecep=""
    )
    # The goal library writes '#' where PDDL needs '-', and its text ends with the ')' closing '(define ...'.
    return (
        f"(define (problem plan_{spec.task_type})\n(:domain alfred)\n(:objects {objects_decl})\n(:init\n  "
        + "\n  ".join(init)
        + "\n)\n"
        + goal.replace("#", "-")
    )


def traj_data(spec: GameSpec) -> dict:
    """The minimal ``traj_data.json`` that ``AlfredTWEnv`` and the task-text templates read."""
    return {
        "task_type": spec.task_type,
        "pddl_params": {
            "object_target": spec.object_target,
            "parent_target": spec.parent_target,
            "toggle_target": spec.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
    }


def task_description(spec: GameSpec) -> str:
    """The task text the game shows after ``Your task is to:`` (one of the goal library's templates, no RNG)."""
    import alfworld.gen.goal_library as glib

    template = glib.gdict[spec.task_type]["templates"][spec.task_template]
    return template.format(
        obj=spec.object_target.lower(),
        recep=spec.parent_target.lower(),
        toggle=spec.toggle_target.lower(),
        mrecep="",
    )


def game_json(spec: GameSpec) -> dict:
    """The ``game.tw-pddl`` content: domain, grammar with the task text filled in, problem, ``solvable: true``."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    grammar = Path(ALFRED_TWL2_PATH).read_text()
    if "UNKNOWN GOAL" not in grammar:
        raise RuntimeError(f"{ALFRED_TWL2_PATH} has no 'UNKNOWN GOAL' placeholder; unsupported alfworld version")
    return {
        "pddl_domain": Path(ALFRED_PDDL_PATH).read_text(),
        # Filled in directly instead of alfworld's add_task_to_grammar, whose template choice uses the global RNG.
        "grammar": grammar.replace("UNKNOWN GOAL", task_description(spec)),
        "pddl_problem": pddl_problem(spec),
        "solvable": True,
        "walkthrough": list(spec.expert_plan),
    }


def write_game(root: str | Path, split: str, spec: GameSpec, trial: int = 0) -> Path:
    """Write one game under ``root/split/<spec.folder_name>/trial_T0_<trial>/``; return its ``game.tw-pddl`` path."""
    folder = Path(root) / split / spec.folder_name / f"trial_T0_{trial}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "initial_state.pddl").write_text(pddl_problem(spec))
    (folder / "traj_data.json").write_text(json.dumps(traj_data(spec), indent=1))
    game_path = folder / "game.tw-pddl"
    game_path.write_text(json.dumps(game_json(spec)))
    return game_path


def build_offline_games(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "valid_seen", "valid_unseen"),
    task_types: tuple[str, ...] = tuple(TASK_TYPES.values()),
    trials: int = 1,
) -> dict[str, list[Path]]:
    """Write ``trials`` games per task type in each split; return ``{split: [game.tw-pddl paths]}``.

    ``root`` then has the layout of ``$ALFWORLD_DATA/json_2.1.1``; point ``dataset.data_path`` etc. at
    ``root/train``, ``root/valid_seen`` and ``root/valid_unseen``.
    """
    unknown = sorted(set(task_types) - set(SPECS))
    if unknown:
        raise ValueError(f"task_types: unknown {unknown}; allowed {sorted(SPECS)}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    written: dict[str, list[Path]] = {}
    for split in splits:
        written[split] = [write_game(root, split, SPECS[t], k) for t in task_types for k in range(trials)]
    return written
