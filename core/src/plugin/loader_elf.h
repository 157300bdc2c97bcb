// Reads a shared library's dynamic symbol table from the file, without loading it, so that the
// loader knows what `workbench_plugin_info` is before it runs any of the library's code.
#pragma once

#include <filesystem>
#include <string>

namespace wb {

struct SymbolCheck {
  enum class Verdict {
    Function,     // a defined function in an executable section: safe to call
    NotElf,       // not an ELF shared object this host can read (reason says why)
    Missing,      // the library does not export the symbol
    NotFunction,  // exported, but not code (a data object, ...): calling it would crash
  };
  Verdict verdict = Verdict::NotElf;
  std::string reason;  // empty for Function
};

// Looks `name` up among the exported (global or weak, default-visibility) dynamic symbols of
// `file`. Every offset read from the file is checked against its size, so a damaged or hostile
// file yields NotElf with a reason, never a crash.
SymbolCheck check_function_symbol(const std::filesystem::path& file, const std::string& name);

}  // namespace wb
