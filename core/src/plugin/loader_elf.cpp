#include "plugin/loader_elf.h"

#include <elf.h>

#include <cstring>
#include <fstream>
#include <vector>

namespace wb {

namespace fs = std::filesystem;

namespace {

using Verdict = SymbolCheck::Verdict;

// Reads `count` objects of type T at `offset`, or returns false if they do not lie in the file.
template <typename T>
bool read_at(std::ifstream& in, std::uintmax_t file_size, std::uint64_t offset, std::uint64_t count,
             std::vector<T>& out) {
  if (offset > file_size || count > (file_size - offset) / sizeof(T)) return false;
  out.resize(static_cast<std::size_t>(count));
  if (count == 0) return true;
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(count * sizeof(T)));
  return static_cast<bool>(in);
}

const char* symbol_type_name(unsigned type) {
  switch (type) {
    case STT_NOTYPE:
      return "NOTYPE";
    case STT_OBJECT:
      return "OBJECT, a data object";
    case STT_SECTION:
      return "SECTION";
    case STT_FILE:
      return "FILE";
    case STT_COMMON:
      return "COMMON, a data object";
    case STT_TLS:
      return "TLS, thread-local data";
    case STT_GNU_IFUNC:
      return "GNU_IFUNC, an indirect function";
    default:
      return "unknown";
  }
}

// The name at `offset` of a string table, or "" when it does not lie in the table.
std::string table_string(const std::vector<char>& table, std::uint64_t offset) {
  if (offset >= table.size()) return {};
  const char* start = table.data() + offset;
  const void* end = std::memchr(start, '\0', table.size() - offset);
  return end ? std::string(start, static_cast<const char*>(end)) : std::string();
}

}  // namespace

SymbolCheck check_function_symbol(const fs::path& file, const std::string& name) {
  auto not_elf = [](std::string why) { return SymbolCheck{Verdict::NotElf, std::move(why)}; };
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(file, ec);
  if (ec) return not_elf("cannot read it: " + ec.message());
  std::ifstream in(file, std::ios::binary);
  if (!in) return not_elf("cannot open it for reading");

  std::vector<Elf64_Ehdr> header;
  if (!read_at(in, size, 0, 1, header) || std::memcmp(header[0].e_ident, ELFMAG, SELFMAG) != 0)
    return not_elf("not an ELF file");
  const Elf64_Ehdr& eh = header[0];
  if (eh.e_ident[EI_CLASS] != ELFCLASS64)
    return not_elf("not a 64-bit ELF file (ELF class " + std::to_string(eh.e_ident[EI_CLASS]) +
                   ")");
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  constexpr unsigned char kHostData = ELFDATA2LSB;
#else
  constexpr unsigned char kHostData = ELFDATA2MSB;
#endif
  if (eh.e_ident[EI_DATA] != kHostData) return not_elf("an ELF file of the other byte order");
  if (eh.e_type != ET_DYN) return not_elf("an ELF file but not a shared library");
  if (eh.e_shnum == 0 || eh.e_shentsize != sizeof(Elf64_Shdr))
    return not_elf("a shared library without a readable section table");

  std::vector<Elf64_Shdr> sections;
  if (!read_at(in, size, eh.e_shoff, eh.e_shnum, sections))
    return not_elf("its section table lies beyond the end of the file");
  // Section names, for the reason only: a missing table leaves them empty.
  std::vector<char> section_names;
  if (eh.e_shstrndx < sections.size())
    read_at(in, size, sections[eh.e_shstrndx].sh_offset, sections[eh.e_shstrndx].sh_size,
            section_names);

  for (const Elf64_Shdr& table : sections) {
    if (table.sh_type != SHT_DYNSYM) continue;
    if (table.sh_entsize != sizeof(Elf64_Sym) || table.sh_link >= sections.size())
      return not_elf("its dynamic symbol table is malformed");
    std::vector<Elf64_Sym> symbols;
    std::vector<char> strings;
    const Elf64_Shdr& string_table = sections[table.sh_link];
    if (!read_at(in, size, table.sh_offset, table.sh_size / sizeof(Elf64_Sym), symbols) ||
        !read_at(in, size, string_table.sh_offset, string_table.sh_size, strings))
      return not_elf("its dynamic symbol table lies beyond the end of the file");
    for (const Elf64_Sym& s : symbols) {
      const unsigned binding = ELF64_ST_BIND(s.st_info);
      // Only what dlsym can return: defined, global or weak, default or protected visibility.
      if (s.st_shndx == SHN_UNDEF || (binding != STB_GLOBAL && binding != STB_WEAK) ||
          ELF64_ST_VISIBILITY(s.st_other) == STV_HIDDEN ||
          ELF64_ST_VISIBILITY(s.st_other) == STV_INTERNAL ||
          table_string(strings, s.st_name) != name)
        continue;
      const unsigned type = ELF64_ST_TYPE(s.st_info);
      if (type != STT_FUNC)
        return {Verdict::NotFunction,
                name + " is not a function (ELF symbol type " + symbol_type_name(type) + ")"};
      if (s.st_shndx >= sections.size())
        return {Verdict::NotFunction, name + " is not in a section of the library"};
      const Elf64_Shdr& home = sections[s.st_shndx];
      if (!(home.sh_flags & SHF_EXECINSTR)) {
        const std::string section = table_string(section_names, home.sh_name);
        return {Verdict::NotFunction, name + " lies in a section that is not executable (" +
                                          (section.empty() ? "unnamed" : section) + ")"};
      }
      return {Verdict::Function, {}};
    }
  }
  return {Verdict::Missing, "it does not export " + name};
}

}  // namespace wb
