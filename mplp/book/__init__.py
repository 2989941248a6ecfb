"""Book machinery: executing chapters with a profile (papermill), the report that gathers
every chapter's verdicts, and the figures.  Depends on the layers below."""
