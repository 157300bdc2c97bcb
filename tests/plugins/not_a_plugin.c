/* A valid shared library that is not a workbench plugin. */
int not_a_plugin_answer(void) { return 42; }
