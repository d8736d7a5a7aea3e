"""Multi-step dialogs whose state lives in the database (see ``handlers.dialogs.base``).

``DIALOGS`` maps a dialog's stored name to its definition; the engine looks a stored state up
here. Register a new dialog with ``register`` (its ``name`` must be unique and stable: it is
written into ``dialog_state`` rows of users in the middle of it).
"""

from __future__ import annotations

from handlers.dialogs.base import Dialog
from handlers.dialogs.bind import BindDialog
from handlers.dialogs.invite import InviteDialog
from handlers.dialogs.meeting import MeetingDialog
from handlers.dialogs.training import TrainingRecordDialog
from handlers.referral.dialog import ReferralDialog, RejectDialog

DIALOGS: dict[str, Dialog] = {}


def register(dialog: Dialog) -> Dialog:
    """Add (or replace, e.g. the full referral wizard replacing the entry dialog) a dialog."""
    DIALOGS[dialog.name] = dialog
    return dialog


for _dialog in (BindDialog(), InviteDialog(), ReferralDialog(), RejectDialog(), TrainingRecordDialog(),
                MeetingDialog()):
    register(_dialog)


def get(name: str) -> Dialog | None:
    return DIALOGS.get(name)


__all__ = ["DIALOGS", "Dialog", "get", "register"]
