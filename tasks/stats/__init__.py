"""Pure statistics on arrays and loaded tables: error rates and the EER, exact intervals, the identity bootstrap,
the group aggregators, classifier statistics, pair protocols, verification scoring and the all-pairs counts.
Nothing here reads files or knows a job kind."""
