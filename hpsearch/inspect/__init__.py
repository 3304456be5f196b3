"""Reading a study without changing it: `status`, `best`, `export` and `report`."""
