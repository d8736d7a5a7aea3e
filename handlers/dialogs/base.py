"""A small, generic step-by-step dialog framework whose state lives in the database.

A ``Dialog`` is an ordered list of ``Step`` objects plus a ``finish`` action. Between messages
nothing is kept in process memory: the engine stores ``(dialog name, current step, data)`` with
``storage.repositories.put_dialog`` after every message and reads it back with ``get_dialog``, so
any worker (or a restarted process) continues where the user left off.

Per message the engine calls ``Dialog.begin`` (a new dialog) or ``Dialog.advance`` (the user
answered the current step). A step turns the user's answer into a value (``Step.parse``) or raises
``Reask`` with what is expected; the engine then repeats the step's question. ``Abort`` ends the
dialog with a message (e.g. an expired invite code). When the last step is answered ``finish``
runs and the dialog is cleared.

Extending a dialog (the later referral wizard): subclass it, add steps to ``steps`` and override
``next_step`` for branching and ``finish`` for the final action; the stored data of a dialog
in progress stays valid because steps store their values under their own ``key``.

Button values are ``d:<dialog>:<step>:<value>`` (``encode_choice``); a button pressed for a
step that is no longer current is recognised and answered as stale instead of being misread.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from handlers.identity import Identity
from handlers.messages import Choice, Reply
from handlers.ports import EngineSettings
from handlers.texts import CANCEL_HINT, pick, tr

CHOICE_PREFIX = "d:"
MAX_CHOICE_BYTES = 64  # Telegram callback_data limit


def encode_choice(dialog: str, step: str, value: str) -> str:
    encoded = f"{CHOICE_PREFIX}{dialog}:{step}:{value}"
    if len(encoded.encode("utf-8")) > MAX_CHOICE_BYTES:
        raise ValueError(f"choice value too long for Telegram callback data: {encoded!r}")
    return encoded


def decode_choice(value: str) -> tuple[str, str, str] | None:
    """``(dialog, step, value)`` of a dialog button, or None for any other value."""
    if not value.startswith(CHOICE_PREFIX):
        return None
    parts = value[len(CHOICE_PREFIX):].split(":", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


@dataclass
class Turn:
    """One user message as a dialog sees it."""

    session: Session
    identity: Identity
    settings: EngineSettings
    now: datetime
    text: str = ""
    #: The value of a pressed button meant for the current step (already decoded), if any.
    choice: str | None = None
    english: bool = False
    #: Where the message came from (for records made by a dialog, e.g. a referral's event).
    channel: str = ""
    user_key: str = ""
    #: Files sent with the message (only a dialog step that asks for files receives them).
    attachments: tuple[Any, ...] = ()
    #: Queues notifications to other staff (``handlers.notifications.ChannelRouter``), if any.
    router: Any = None
    #: The name of the dialog handling this turn (set by ``Dialog``).
    dialog: str = ""
    #: How to leave (or go back), shown under each question (the dialog's ``hint``).
    hint: tuple[str, str] = CANCEL_HINT

    @property
    def answer(self) -> str:
        return (self.text or "").strip()

    def t(self, zh: str, en: str) -> str:
        return tr(self.english, zh, en)


class Reask(Exception):
    """The answer does not fit the step: tell the user why; the step is asked again."""

    def __init__(self, message: str, *, step: str | None = None, choices: Sequence[Choice] = ()) -> None:
        super().__init__(message)
        self.message = message
        #: Raised by ``Dialog.finish``: the step to ask again (default: the last one).
        self.step = step
        #: Buttons to offer instead of the step's own (e.g. the institutions a typed name matches).
        self.choices = tuple(choices)


class Abort(Exception):
    """The dialog cannot continue (e.g. an expired code): say why and end it."""

    def __init__(self, message: str, *, choices: Sequence[Choice] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.choices = tuple(choices)


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    #: Other spellings a typed answer may use (matched after normalisation).
    aliases: tuple[str, ...] = ()


class Step:
    """One question of a dialog. ``key`` is where the answer is stored in the dialog data."""

    name: str
    key: str

    def prompt(self, turn: Turn, data: dict[str, Any], dialog: str) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse(self, turn: Turn, data: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        """The value of the user's answer, or raise ``Reask`` / ``Abort``."""
        raise NotImplementedError


@dataclass
class TextStep(Step):
    """A free-text answer checked by ``validate`` (which returns the value or raises Reask)."""

    name: str
    question: Callable[[Turn, dict[str, Any]], str]
    validate: Callable[[Turn, dict[str, Any], str], Any]
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    def prompt(self, turn: Turn, data: dict[str, Any], dialog: str) -> Reply:
        return Reply(text=f"{self.question(turn, data)}\n{pick(turn.hint, turn.english)}")

    def parse(self, turn: Turn, data: dict[str, Any]) -> Any:
        return self.validate(turn, data, turn.choice if turn.choice is not None else turn.answer)


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


@dataclass
class ChoiceStep(Step):
    """Pick one of ``options``: by button, by typing a label/alias (or a unique part of one), or by
    the number shown in front of it. Unknown or ambiguous answers are re-asked with suggestions."""

    name: str
    question: Callable[[Turn, dict[str, Any]], str]
    options: Callable[[Turn, dict[str, Any]], list[Option]]
    key: str = ""
    #: Only the first ``max_buttons`` options become buttons; the rest can be typed.
    max_buttons: int = 8
    #: Options offered as buttons (default: the first ``max_buttons`` of ``options``).
    featured: Callable[[Turn, dict[str, Any]], list[Option]] | None = None
    what: tuple[str, str] = ("选项", "option")

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    def buttons(self, turn: Turn, data: dict[str, Any]) -> list[Option]:
        shown = self.featured(turn, data) if self.featured else self.options(turn, data)
        return shown[: self.max_buttons]

    def prompt(self, turn: Turn, data: dict[str, Any], dialog: str) -> Reply:
        options = self.options(turn, data)
        shown = self.buttons(turn, data)
        text = self.question(turn, data)
        if len(options) > len(shown):
            text += "\n" + turn.t(f"（按钮只列出最可能的 {len(shown)} 个，其他{self.what[0]}可直接输入名称）",
                                  f"(only the {len(shown)} likeliest are buttons; type the name of any other)")
        text += "\n" + pick(turn.hint, turn.english)
        return Reply(text=text, choices=tuple(Choice(o.label, encode_choice(dialog, self.name, o.value))
                                              for o in shown))

    def parse(self, turn: Turn, data: dict[str, Any]) -> Option:
        options = self.options(turn, data)
        if turn.choice is not None:
            for o in options:
                if o.value == turn.choice:
                    return o
            raise Reask(turn.t("这个选项已经不可用，请重新选择。", "That option is no longer available; please choose again."))
        answer = turn.answer
        if not answer:
            raise Reask(turn.t(f"请选择一个{self.what[0]}。", f"Please choose an {self.what[1]}."))
        shown = self.buttons(turn, data)
        if answer.isdigit() and 1 <= int(answer) <= len(shown):
            return shown[int(answer) - 1]
        wanted = _norm(answer)
        if not wanted:
            raise Reask(self._unknown(turn, answer, options))
        exact = [o for o in options if wanted in {_norm(o.label), *(_norm(a) for a in o.aliases), _norm(o.value)}]
        if len(exact) == 1:
            return exact[0]
        partial = [o for o in options if any(wanted in _norm(n) for n in (o.label, *o.aliases))] if len(wanted) >= 2 else []
        if len(partial) == 1:
            return partial[0]
        if not partial:  # "我要上转" contains the alias "上转" of exactly one option
            containing = [o for o in options
                          if any(len(_norm(a)) >= 2 and _norm(a) in wanted for a in (o.label, *o.aliases))]
            if len(containing) == 1:
                return containing[0]
        if len(partial) > 1:
            names = "、".join(o.label for o in partial[:6])
            raise Reask(turn.t(f"“{answer}”对应多个{self.what[0]}：{names}。请点选按钮，或输入更完整的名称。",
                               f"\"{answer}\" matches several: {names}. Please tap one or type more of the name."),
                        choices=[Choice(o.label, encode_choice(turn.dialog, self.name, o.value))
                                 for o in partial[: self.max_buttons]])
        raise Reask(self._unknown(turn, answer, options))

    def _unknown(self, turn: Turn, answer: str, options: list[Option]) -> str:
        labels = [o.label for o in options]
        close = difflib.get_close_matches(answer, labels, n=3, cutoff=0.4)
        hint = turn.t(f"您是不是要找：{'、'.join(close)}？", f"Did you mean: {', '.join(close)}?") if close else ""
        return turn.t(f"没有找到“{answer}”这个{self.what[0]}。{hint}请点选下面的按钮，或输入列表中的名称。",
                      f"I could not find the {self.what[1]} \"{answer}\". {hint} Please tap a button or type a name "
                      "from the list.")


@dataclass
class OpenChoiceStep(ChoiceStep):
    """A ``ChoiceStep`` that also takes an answer in the user's own words: a typed text that
    matches no option (and is long enough to mean something) becomes ``Option("text:…", text)``."""

    min_chars: int = 2
    max_chars: int = 300

    def parse(self, turn: Turn, data: dict[str, Any]) -> Option:
        try:
            picked = super().parse(turn, data)
        except Reask:
            if turn.choice is not None or len(turn.answer) < self.min_chars:
                raise
            return self._own_words(turn)
        # "床位已满，建议转市中心医院" contains the option "床位已满" but says more: keep the words
        wanted = _norm(turn.answer)
        if turn.choice is None and not turn.answer.isdigit() and wanted and \
                all(wanted not in _norm(n) for n in (picked.label, *picked.aliases, picked.value)):
            return self._own_words(turn)
        return picked

    def _own_words(self, turn: Turn) -> Option:
        answer = turn.answer
        if len(answer) > self.max_chars:
            raise Reask(turn.t(f"内容太长了，请控制在 {self.max_chars} 字以内。",
                               f"That is too long; please keep it under {self.max_chars} characters."))
        return Option(f"text:{answer}", answer)


@dataclass
class Update:
    """What the engine does after a dialog handled a message."""

    replies: list[Reply]
    #: The step to store (dialog continues), or None (dialog finished: state cleared).
    step: str | None
    data: dict[str, Any] = field(default_factory=dict)


class Dialog:
    """A named sequence of steps. Subclasses set ``name``, ``title``, ``steps`` and ``finish``."""

    name: str = ""
    #: How the dialog is named to users, e.g. ("转诊登记", "referral").
    title: tuple[str, str] = ("操作", "action")
    #: How to start it again (shown when it expired), e.g. ("（发送 /refer）", " (send /refer)").
    restart_hint: tuple[str, str] = ("", "")
    #: The steps in order; subclasses set them in ``__init__``.
    steps: list[Step]
    max_reasks: int = 5
    #: Shown under each question: how to leave (a dialog with a way back says so too).
    hint: tuple[str, str] = CANCEL_HINT

    def __init__(self) -> None:
        self.steps = []

    # -- structure ---------------------------------------------------------------------------

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"dialog {self.name!r} has no step {name!r}")

    def next_step(self, current: str | None, data: dict[str, Any]) -> str | None:
        """The step to ask next, given the step just answered (``current``, None at the start):
        by default the first step without a value; None when every step has one (done).
        Override for branching."""
        for s in self.steps:
            if s.key not in data:
                return s.name
        return None

    def title_for(self, english: bool) -> str:
        return pick(self.title, english)

    # -- behaviour ---------------------------------------------------------------------------

    def allowed(self, turn: Turn) -> str | None:
        """None if the user may run this dialog, else the reason they may not."""
        return None

    def prefill(self, turn: Turn, arg: str, data: dict[str, Any]) -> None:
        """Use an argument typed with the command (``/bind CODE``); may raise Reask/Abort."""

    def finish(self, turn: Turn, data: dict[str, Any]) -> list[Reply]:  # pragma: no cover - abstract
        raise NotImplementedError

    def begin(self, turn: Turn, arg: str = "") -> Update:
        turn.dialog, turn.hint = self.name, self.hint
        data: dict[str, Any] = {"_lang": "en" if turn.english else "zh"}
        reason = self.allowed(turn)
        if reason is not None:
            return Update([Reply(reason)], None)
        lead: list[Reply] = []
        if arg:
            try:
                self.prefill(turn, arg, data)
            except Abort as stop:
                return Update([Reply(stop.message, choices=stop.choices)], None)
            except Reask as again:
                lead.append(Reply(again.message))
        return self._continue(turn, None, data, lead)

    def advance(self, turn: Turn, step_name: str, data: dict[str, Any]) -> Update:
        data = dict(data)
        turn.dialog, turn.hint = self.name, self.hint
        turn.english = data.get("_lang") == "en"
        reason = self.allowed(turn)  # roles may have changed since the dialog began
        if reason is not None:
            return Update([Reply(reason)], None)
        step = self.step(step_name)
        try:
            value = step.parse(turn, data)
        except Abort as stop:
            return Update([Reply(stop.message, choices=stop.choices)], None)
        except Reask as again:
            return self._reask(turn, step, data, again.message, again.choices)
        data[step.key] = value.value if isinstance(value, Option) else value
        if isinstance(value, Option):
            data[f"{step.key}_label"] = value.label
        data.pop("_reasks", None)
        return self._continue(turn, step_name, data, [])

    def _continue(self, turn: Turn, current: str | None, data: dict[str, Any], lead: list[Reply]) -> Update:
        nxt = self.next_step(current, data)
        if nxt is not None:
            return Update([*lead, self.step(nxt).prompt(turn, data, self.name)], nxt, data)
        try:
            return Update([*lead, *self.finish(turn, data)], None)
        except Abort as stop:
            return Update([*lead, Reply(stop.message, choices=stop.choices)], None)
        except Reask as again:  # an answer was refused by the final action: ask for it again
            step = self.step(again.step) if again.step else self.steps[-1]
            data.pop(step.key, None)
            data.pop(f"{step.key}_label", None)
            return self._reask(turn, step, data, again.message)

    def _reask(self, turn: Turn, step: Step, data: dict[str, Any], message: str,
               choices: Sequence[Choice] = ()) -> Update:
        tries = int(data.get("_reasks", 0)) + 1
        if tries >= self.max_reasks:
            text = turn.t(f"{message}\n多次输入仍未成功，已结束{self.title_for(False)}。请确认信息后重新开始，或联系管理员。",
                          f"{message}\nToo many unsuccessful attempts; the {self.title_for(True)} has ended. "
                          "Please check and start again, or contact your administrator.")
            return Update([Reply(text)], None)
        data["_reasks"] = tries
        prompt = step.prompt(turn, data, self.name)
        return Update([Reply(f"{message}\n\n{prompt.text}", choices=tuple(choices) or prompt.choices)], step.name, data)


__all__ = [
    "Abort",
    "ChoiceStep",
    "Dialog",
    "OpenChoiceStep",
    "Option",
    "Reask",
    "Step",
    "TextStep",
    "Turn",
    "Update",
    "decode_choice",
    "encode_choice",
]
