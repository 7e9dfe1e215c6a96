"""Writes for human studies: designing a study, starting participants, issuing trials,
storing responses, quality control and aggregation into HumanJudgments.

Callers use this package (``from annotation import services``); its modules, by concern:

- ``base``: the problems the services raise and the answer a participant submits.
- ``design``: study creation, items, status, closing and reopening, discriminating designs.
- ``quality``: the study's quality rules and counting a participant's answers on items.
- ``tags``: checking and storing tags, tag and chain states.
- ``trials``: issuing, claiming, answering, expiry, reservations, the end of a session; the
  only module here that runs plain SQL (annotation/sql.py).
- ``participants``: starting a session, recruiter-id conflicts, exclusion by a researcher.
- ``arrangements``: multi-arrangement sessions: their stimuli, adaptive subsets, checks of
  an arrangement, its quality rules and each participant's estimated dissimilarities.
- ``aggregation``: responses into HumanJudgments, tags into description sets.

Pilots (simulated participants sent through the participant pages before a study opens)
are imported from their own modules: ``pilots`` (starting, running, ending a pilot and
taking its bots' counts out of the study) and ``pilot_report`` (what the pilot found).
"""

from annotation.services.aggregation import (
    responses_visible_to,
    stimuli_by_id,
    study_aggregate,
    study_descriptions_create,
)
from annotation.services.arrangements import session_estimate
from annotation.services.base import (
    Answer,
    ParticipantConflict,
    Placement,
    StudyFull,
    TrialProblem,
)
from annotation.services.design import (
    MAX_ITEMS,
    ItemPlan,
    study_close_if_complete,
    study_create,
    study_create_discriminating,
    study_set_status,
)
from annotation.services.participants import (
    EXTERNAL_ID_MAX_LENGTH,
    clean_external_id,
    participant_check_external_id,
    participant_of_account,
    participant_set_excluded,
    participant_start,
    pilot_admits,
    resume_refuse,
    session_plan,
)
from annotation.services.quality import quality_problems
from annotation.services.tags import MAX_TAGS_PER_TRIAL, TAG_MAX_LENGTH, normalise_tag
from annotation.services.trials import (
    EXPIRY_SWEEP_SECONDS,
    STIMULUS_COLUMNS,
    participant_finish,
    response_submit,
    response_submit_and_next,
    study_has_room,
    trial_current,
    trials_expire,
)

__all__ = [
    "EXPIRY_SWEEP_SECONDS",
    "EXTERNAL_ID_MAX_LENGTH",
    "MAX_ITEMS",
    "MAX_TAGS_PER_TRIAL",
    "STIMULUS_COLUMNS",
    "TAG_MAX_LENGTH",
    "Answer",
    "ItemPlan",
    "ParticipantConflict",
    "Placement",
    "StudyFull",
    "TrialProblem",
    "clean_external_id",
    "normalise_tag",
    "participant_check_external_id",
    "participant_finish",
    "participant_of_account",
    "participant_set_excluded",
    "participant_start",
    "pilot_admits",
    "quality_problems",
    "response_submit",
    "response_submit_and_next",
    "responses_visible_to",
    "resume_refuse",
    "session_estimate",
    "session_plan",
    "stimuli_by_id",
    "study_aggregate",
    "study_close_if_complete",
    "study_create",
    "study_create_discriminating",
    "study_descriptions_create",
    "study_has_room",
    "study_set_status",
    "trial_current",
    "trials_expire",
]
