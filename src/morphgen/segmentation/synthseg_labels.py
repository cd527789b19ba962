"""SynthSeg's label table (FreeSurfer numbering) and how its structures group into morphgen's volumes.

Grouping (documented choices):

* wm: cerebral white matter (2, 41), cerebellar white matter (7, 46) and the brainstem (16); the brainstem is
  mostly white matter and the MNI WM prior that the Atropos back-end uses covers it too.
* gm: cerebral cortex (3, 42), cerebellar cortex (8, 47) and deep grey matter: thalamus (10, 49),
  caudate (11, 50), putamen (12, 51), pallidum (13, 52), hippocampus (17, 53), amygdala (18, 54),
  accumbens (26, 58) and ventral DC (28, 60), as FreeSurfer's subcortical grey.
* csf: lateral ventricles (4, 43), inferior lateral ventricles (5, 44), 3rd (14) and 4th (15) ventricles and
  extra-cerebral CSF (24).
* ventricles: lateral + inferior lateral ventricles (4, 5, 43, 44), as in FreeSurfer-based "Ventricles"
  tables (e.g. ADNI); the 3rd and 4th ventricles are reported as their own regions.
* regional volumes: each structure by side (``left_hippocampus``...), both sides together
  (``hippocampus``...), and ``deep_gm`` (all deep grey structures).
"""

from __future__ import annotations

# Output channel -> label of SynthSeg 2.0 (robust and non-robust): its segmentation labels sorted ascending,
# which is the order of the network's posteriors (SynthSeg's "labels table.txt" plus 24, CSF, new in 2.0).
SYNTHSEG_2_LABELS: tuple[int, ...] = (
    0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28,
    41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60,
)  # fmt: skip

# label -> structure name; paired structures carry left_/right_
STRUCTURES: dict[int, str] = {
    2: "left_cerebral_wm",
    3: "left_cortex",
    4: "left_lateral_ventricle",
    5: "left_inferior_lateral_ventricle",
    7: "left_cerebellum_wm",
    8: "left_cerebellum_cortex",
    10: "left_thalamus",
    11: "left_caudate",
    12: "left_putamen",
    13: "left_pallidum",
    14: "third_ventricle",
    15: "fourth_ventricle",
    16: "brainstem",
    17: "left_hippocampus",
    18: "left_amygdala",
    24: "extracerebral_csf",
    26: "left_accumbens",
    28: "left_ventral_dc",
    41: "right_cerebral_wm",
    42: "right_cortex",
    43: "right_lateral_ventricle",
    44: "right_inferior_lateral_ventricle",
    46: "right_cerebellum_wm",
    47: "right_cerebellum_cortex",
    49: "right_thalamus",
    50: "right_caudate",
    51: "right_putamen",
    52: "right_pallidum",
    53: "right_hippocampus",
    54: "right_amygdala",
    58: "right_accumbens",
    60: "right_ventral_dc",
}

TISSUE_OF_LABEL: dict[int, str] = {
    **{lab: "wm" for lab in (2, 41, 7, 46, 16)},
    **{lab: "gm" for lab in (3, 42, 8, 47, 10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 26, 58, 28, 60)},
    **{lab: "csf" for lab in (4, 43, 5, 44, 14, 15, 24)},
}
VENTRICLE_LABELS: tuple[int, ...] = (4, 5, 43, 44)
DEEP_GM_LABELS: tuple[int, ...] = (10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 26, 58, 28, 60)


def regional_groups(labels_present: tuple[int, ...] | list[int]) -> dict[str, tuple[int, ...]]:
    """Regional volume name -> labels it sums, for the structures a model can output.

    Every structure by name; for paired structures also both sides together (``hippocampus``); ``deep_gm``.
    """
    present = [lab for lab in labels_present if lab in STRUCTURES]
    groups: dict[str, tuple[int, ...]] = {STRUCTURES[lab]: (lab,) for lab in present}
    both: dict[str, list[int]] = {}
    for lab in present:
        name = STRUCTURES[lab]
        for side in ("left_", "right_"):
            if name.startswith(side):
                both.setdefault(name.removeprefix(side), []).append(lab)
    groups.update({name: tuple(labs) for name, labs in both.items()})
    deep = tuple(lab for lab in present if lab in DEEP_GM_LABELS)
    if deep:
        groups["deep_gm"] = deep
    return groups
