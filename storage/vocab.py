"""The demographic vocabulary, defined once: ethnicities, genders, demographic groups and their names.

Gender is the binary target (``male`` = 0, ``female`` = 1). Ethnicity groups come from the data: any names (RFW's
four, FairFace's seven, the study's three :data:`ETHNICITIES`), normalised by :func:`normalise` (surrounding
spaces and case ignored) and checked by :func:`check_group_name`; a table's labels are int8 codes into its own
ordered vocabulary (:func:`ethnicity_vocabulary`: the study's names first, in the study's order, then the others
sorted). The study's demographic group is an ethnicity x gender pair named ``"<ethnicity>_<gender>"``
(``"asian_female"``); any product of attributes is named the same way by :func:`storage.attributes.group_labels`.
Functions that turn codes into names take the table's own vocabulary (``EmbeddingTable.ethnicities``): none
defaults to the study's three, which are used only where the data are the study's (its and DiveFace's group
names, the synthetic data).
Group folders and files may use the study's names (``HA4K_120`` ...), DiveFace's annotation lists
(``Group1_Male`` ...) or the plain names.
"""

from __future__ import annotations

import numpy as np

from storage.errors import InputError

ETHNICITIES: tuple[str, ...] = ("asian", "caucasian", "black")
GENDERS: tuple[str, ...] = ("male", "female")
ALL = "all"   # the train group made of every ethnicity

# H = hombre (male), M = mujer (female); A = asian, B = blanco (caucasian), N = negro (black).
STUDY_GROUPS: dict[str, tuple[str, str]] = {
    "HA4K_120": ("asian", "male"), "MA4K_120": ("asian", "female"),
    "HB4K_120": ("caucasian", "male"), "MB4K_120": ("caucasian", "female"),
    "HN4K_120": ("black", "male"), "MN4K_120": ("black", "female")}
# DiveFace's lists: Group1 = East Asian, Group2 = Sub-Saharan and South Indian, Group3 = Caucasian.
DIVEFACE_GROUPS: dict[str, tuple[str, str]] = {
    "Group1_Male": ("asian", "male"), "Group1_Female": ("asian", "female"),
    "Group2_Male": ("black", "male"), "Group2_Female": ("black", "female"),
    "Group3_Male": ("caucasian", "male"), "Group3_Female": ("caucasian", "female")}


def normalise(name: str) -> str:
    """A label as read from a file, compared without surrounding spaces and case."""
    return str(name).strip().lower()


def check_group_name(name: str, where: str) -> str:
    """``name`` normalised; InputError naming ``where`` when it cannot be an ethnicity group: empty, ``all``
    (the union of every group), or containing ``+`` (which joins groups into a train-group union)."""
    normal = normalise(name)
    if not normal or normal == ALL or "+" in normal:
        raise InputError(f"{where}: {name!r} cannot name an ethnicity group; expected a non-empty name that is not "
                         f"'{ALL}' and has no '+' (e.g. asian, african, indian, middle eastern)")
    return normal


def parse_train_group(train_group: str) -> tuple[str, ...]:
    """The parts of a train group as written: ``"asian"`` -> ``("asian",)``, ``"black+asian"`` ->
    ``("black", "asian")``, ``"all"`` -> ``("all",)``. InputError for an empty part or a repeated one."""
    if not isinstance(train_group, str) or not train_group.strip():
        raise InputError(f"train group {train_group!r}: expected an ethnicity group, 'all' or a union such as "
                         f"'asian+black'")
    if train_group.strip() == ALL:
        return (ALL,)
    parts = tuple(p.strip() for p in train_group.split("+"))
    if any(not p or p == ALL for p in parts):
        raise InputError(f"train group {train_group!r}: expected group names joined by '+', e.g. 'asian+black'")
    if len(set(parts)) != len(parts):
        raise InputError(f"train group {train_group!r} names an ethnicity twice")
    return parts


def ethnicity_vocabulary(names: set[str] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The code order of a table's ethnicity groups: all of the study's :data:`ETHNICITIES` when every name is
    one of them (so the study's codes never change), else the study's names present, then the others sorted."""
    found = set(names)
    if found <= set(ETHNICITIES):
        return ETHNICITIES
    return tuple([e for e in ETHNICITIES if e in found] + sorted(found - set(ETHNICITIES)))


def demographic_name(ethnicity: str, gender: str) -> str:
    """``"asian", "female"`` -> ``"asian_female"``."""
    return f"{ethnicity}_{gender}"


DEMOGRAPHIC_GROUPS: tuple[str, ...] = tuple(demographic_name(e, g) for e in ETHNICITIES for g in GENDERS)

_GROUP_CODES: dict[str, tuple[int, int]] = {
    normalise(name): (ETHNICITIES.index(e), GENDERS.index(g))
    for name, (e, g) in [*STUDY_GROUPS.items(), *DIVEFACE_GROUPS.items(),
                         *((demographic_name(e, g), (e, g)) for e in ETHNICITIES for g in GENDERS)]}


def group_codes(name: str) -> tuple[int, int] | None:
    """(ethnicity code, gender code) of a group name in any accepted naming (case ignored), else None."""
    return _GROUP_CODES.get(normalise(name))


def group_label(codes: tuple[int, int]) -> str:
    """(ethnicity code, gender code) -> ``"asian_male"``."""
    return demographic_name(ETHNICITIES[codes[0]], GENDERS[codes[1]])


def accepted_group_names() -> str:
    """The group names accepted for folders and files (case ignored), for messages."""
    return ("HA4K_120, MA4K_120 (asian male, female), HB4K_120, MB4K_120 (caucasian), HN4K_120, MN4K_120 (black); "
            "Group1_Male, Group1_Female (asian), Group2_Male, Group2_Female (black), Group3_Male, Group3_Female "
            "(caucasian); or " + ", ".join(DEMOGRAPHIC_GROUPS))


def ethnicity_names(codes: np.ndarray, vocabulary: tuple[str, ...]) -> np.ndarray:
    """int8 ethnicity codes -> object array of names (``vocabulary``: the table's ethnicity groups)."""
    return np.asarray(vocabulary, dtype=object)[np.asarray(codes, dtype=np.intp)]


def gender_names(codes: np.ndarray) -> np.ndarray:
    """int8 gender codes -> object array of names."""
    return np.asarray(GENDERS, dtype=object)[np.asarray(codes, dtype=np.intp)]


def demographic_order(found: set[str] | list[str], ethnicities: list[str] | tuple[str, ...]) -> list[str]:
    """Demographic group names in ethnicity x gender order of ``ethnicities`` (e.g. the grid's test groups), then
    any other names sorted."""
    order = list(dict.fromkeys(demographic_name(e, g) for e in ethnicities for g in GENDERS))
    found = set(found)
    return [g for g in order if g in found] + sorted(found - set(order))
