"""The subscriber portal ("account manager"): its own login, never FAB admin rights."""

REGISTRARS = ("views", "staff_views")
