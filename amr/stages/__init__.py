"""Pipeline stages: each maps a Ray Dataset of records to the next one."""
