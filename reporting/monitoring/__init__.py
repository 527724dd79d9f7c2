"""Model monitoring: reference profiles of model versions, and recent traffic compared with them.

A version's reference profile (``ModelVersion.reference_profile``, format in drift.py)
comes from a reference image set given to ``manage.py model_profile`` / ``promote_model
--reference-images``, or else from its first MONITORING_REFERENCE_REQUESTS answers in
production. The comparison counts the answers of a time window into the profile's bins in the
database (two aggregate queries however many models) and reports population stability indexes,
the share of low-confidence answers and plain warnings when a threshold is crossed.
"""
