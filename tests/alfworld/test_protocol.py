"""The verl-agent protocol pieces: action parsing, history lines, prompt text, config validation (pure Python)."""

from __future__ import annotations

import pytest

from holder_nemo.alfworld.protocol import (
    PROMPT_FIRST_STEP,
    ProtocolConfig,
    build_prompt,
    extract_task,
    format_admissible,
    format_history,
    parse_action,
)


@pytest.mark.parametrize(
    ("response", "command", "valid"),
    [
        ("<think>go</think><action>Go To Fridge 1</action>", "go to fridge 1", True),
        (
            "<think>a</think>\n<action>  take apple 1 from countertop 1 \n</action> trailing",
            "take apple 1 from countertop 1",
            True,
        ),
        # first <action> ... first </action>, as verl-agent's str.find
        ("<think>t</think><action>look</action><action>inventory</action>", "look", True),
        # well-formed action without <think>: executed but invalid
        ("<action>look</action>", "look", False),
        ("<think>only open tag<action>look</action>", "look", False),
        # CJK characters anywhere: invalid
        ("<think>想</think><action>look</action>", "look", False),
        # inadmissible but well-formed: valid (admissibility is the game's business)
        ("<think>x</think><action>fly to the moon</action>", "fly to the moon", True),
    ],
)
def test_parse_action_tagged(response, command, valid):
    parsed = parse_action(response)
    assert parsed.command == command
    assert parsed.valid is valid


def test_parse_action_missing_tags_sends_last_30_chars_lowercased():
    response = "I think I should GO TO THE FRIDGE NOW because it is cold"
    parsed = parse_action(response)
    assert parsed.valid is False
    assert parsed.command == response.lower()[-30:]
    assert len(parsed.command) == 30
    assert parse_action("<action>look").valid is False  # no closing tag
    assert parse_action("short").command == "short"


def test_parse_action_switches():
    assert parse_action("<action>look</action>", require_think=False).valid is True
    assert parse_action("<think>想</think><action>look</action>", reject_cjk=False).valid is True


def test_extract_task():
    obs = "-= Welcome =-\n\nYou are in the middle of a room.\n\nYour task is to: put a apple in fridge.\n"
    assert extract_task(obs) == "put a apple in fridge."
    with pytest.raises(ValueError, match="task description"):
        extract_task("no task here")


def test_format_admissible_drops_help_and_quotes():
    assert format_admissible(["go to fridge 1", "help", "look"]) == "'go to fridge 1'\n 'look'"
    assert format_admissible([]) == ""


def test_format_history_numbers_over_the_whole_episode():
    history = [("obs a", "act a"), ("obs b", "act b"), ("obs c", "act c")]
    text, shown = format_history(history, 2)
    assert shown == 2
    assert text == "[Observation 2: 'obs b', Action 2: 'act b']\n[Observation 3: 'obs c', Action 3: 'act c']"
    text1, shown1 = format_history(history[:1], 2)
    assert (text1, shown1) == ("[Observation 1: 'obs a', Action 1: 'act a']", 1)
    assert format_history(history, 0) == ("", 0)
    assert format_history(history, 10)[1] == 3


def test_first_prompt_is_the_no_history_template():
    prompt = build_prompt(task="t", observation="OBS", admissible=["look", "help"], history=[], history_length=2)
    assert prompt == PROMPT_FIRST_STEP.format(current_observation="OBS", admissible_actions="'look'")
    assert prompt.startswith("\nYou are an expert agent operating in the ALFRED Embodied Environment.\n")
    assert "Your admissible actions of the current situation are: ['look'].\n" in prompt
    assert prompt.endswith("present it within <action> </action> tags.\n")


def test_later_prompt_has_task_counts_history_and_observation():
    history = [("o1", "a1"), ("o2", "a2"), ("o3", "a3")]
    prompt = build_prompt(
        task="put a apple in fridge.", observation="OBS4", admissible=["look"], history=history, history_length=2
    )
    expected_lines = [
        "You are an expert agent operating in the ALFRED Embodied Environment. Your task is to: put a apple in fridge.",
        "Prior to this step, you have already taken 3 step(s). Below are the most recent 2 observaitons and the "
        "corresponding actions you took: [Observation 2: 'o2', Action 2: 'a2']",
        "[Observation 3: 'o3', Action 3: 'a3']",
        "You are now at step 4 and your current observation is: OBS4",
        "Your admissible actions of the current situation are: ['look'].",
    ]
    assert prompt.split("\n")[1:6] == expected_lines
    # history_length 0: always the no-history template
    assert build_prompt(task="t", observation="O", admissible=[], history=history, history_length=0).startswith(
        "\nYou are an expert agent operating in the ALFRED Embodied Environment.\nYour current observation is: O"
    )


def test_config():
    cfg = ProtocolConfig()
    assert (cfg.history_length, cfg.max_steps, cfg.success_reward, cfg.invalid_action_penalty) == (2, 50, 10.0, 0.1)
    with pytest.raises(ValueError, match="history_length"):
        ProtocolConfig(history_length=-1)
    with pytest.raises(ValueError, match="max_steps"):
        ProtocolConfig(max_steps=0)
    with pytest.raises(ValueError, match="invalid_action_penalty"):
        ProtocolConfig(invalid_action_penalty=-0.1)
    with pytest.raises(ValueError, match=r"env.alfworld: unknown keys \['history'\]"):
        ProtocolConfig.from_dict({"history": 2})
    assert ProtocolConfig.from_dict({"max_steps": 7}).max_steps == 7
