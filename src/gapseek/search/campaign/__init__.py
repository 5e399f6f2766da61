"""Stage 6 — campaigns: a campaign on disk (:mod:`~gapseek.search.campaign.campaign`), its logs as typed records
(:mod:`~gapseek.search.campaign.log`), its report (:mod:`~gapseek.search.campaign.report`), simulated runs
(:mod:`~gapseek.search.campaign.simulate`) and a lab's rounds (:mod:`~gapseek.search.campaign.lab`)."""

from gapseek.search.campaign.campaign import Campaign
from gapseek.search.campaign.lab import open_campaign, start_lab_campaign, suggest, tell
from gapseek.search.campaign.log import Failure, Suggestion, Trial
from gapseek.search.campaign.simulate import SimResult, draw_prior, run_search, simulate

__all__ = ["Campaign", "Failure", "SimResult", "Suggestion", "Trial", "draw_prior", "open_campaign", "run_search",
           "simulate", "start_lab_campaign", "suggest", "tell"]
