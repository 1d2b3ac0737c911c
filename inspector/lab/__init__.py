"""The attacker's side of the threat model (DESIGN §1): triggers, implants and their ground truth.

Used for demos, workshops and benchmarks only; the scanner never imports the ground truth.
"""

from inspector.lab.triggers import (
    ATTACKS,
    AdditiveTrigger,
    AttackName,
    BlendTrigger,
    FilterTrigger,
    PatchTrigger,
    StickerTrigger,
    Trigger,
    WarpTrigger,
    make_trigger,
    trigger_from_tensors,
    trigger_tensors,
    wanet_field,
)

__all__ = ["ATTACKS", "AdditiveTrigger", "AttackName", "BlendTrigger", "FilterTrigger", "PatchTrigger",
           "StickerTrigger", "Trigger", "WarpTrigger", "make_trigger", "trigger_from_tensors", "trigger_tensors",
           "wanet_field"]
