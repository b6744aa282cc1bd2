"""Performance benchmark: step time, ZO-pass time, passes and peak memory of the five methods
against a faithful re-implementation of MeZO's published step (``hybridopt bench``)."""
