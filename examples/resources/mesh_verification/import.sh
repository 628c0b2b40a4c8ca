# mesh_verification cannot be imported: it is a check that runs on apply, with nothing in
# the clusters to import (its workloads are removed once it has run).
