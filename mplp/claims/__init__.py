"""Evidence: statistics, the pre-registered decision rules, measurements on runs (plateaus,
learned functions, inner training) and the verdict labels.  Depends on the layers below."""
