"""What the three trainers (``sepnms train``, ``sepnms ground train``, ``sepnms clip-finetune``) share:
the one training loop (``loop``), resumable epoch batches (``batches``), the run guards (``guard``:
run lock, resume-settings check, fresh runs) and early stopping (``early_stop``).  It sits below the
model packages and imports none of them: a trainer gives the loop its modules and batches."""
