#include "dist/rendezvous.h"

#include <cstdlib>
#include <stdexcept>

namespace wb {

namespace {

int parse_int(const char* name, const char* text, int lowest) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || value < lowest || value > 1000000)
    throw std::runtime_error(std::string(name) + "='" + text +
                             "' is not a number >= " + std::to_string(lowest));
  return static_cast<int>(value);
}

// "4(x2),3" -> 4: the tasks on the first node (SLURM_TASKS_PER_NODE's form).
int first_count(const char* name, const char* text) {
  const std::string s = text;
  return parse_int(name, s.substr(0, s.find_first_of("(,")).c_str(), 1);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  const std::size_t comma = nodelist.find(',');
  const std::size_t bracket = nodelist.find('[');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket))
    return nodelist.substr(0, comma);
  // prefix[a-b,c]suffix: the first number of the range, zero padding kept.
  const std::size_t end = nodelist.find_first_of("-,]", bracket + 1);
  const std::size_t close = nodelist.find(']', bracket);
  if (end == std::string::npos || close == std::string::npos)
    throw std::runtime_error("cannot read the SLURM node list '" + nodelist + "'");
  std::string suffix = nodelist.substr(close + 1);
  suffix = suffix.substr(0, suffix.find(','));
  return nodelist.substr(0, bracket) + nodelist.substr(bracket + 1, end - bracket - 1) + suffix;
}

std::optional<Rendezvous> rendezvous_from_environment(const EnvironmentReader& reader) {
  const EnvironmentReader env = reader ? reader : [](const char* n) { return std::getenv(n); };
  Rendezvous r;
  if (const char* rank = env("RANK")) {
    const char* world = env("WORLD_SIZE");
    if (!world) throw std::runtime_error("RANK is set but WORLD_SIZE is not");
    r.source = "torchrun";
    r.rank = parse_int("RANK", rank, 0);
    r.world = parse_int("WORLD_SIZE", world, 1);
    if (const char* v = env("LOCAL_RANK")) r.local_rank = parse_int("LOCAL_RANK", v, 0);
    if (const char* v = env("LOCAL_WORLD_SIZE"))
      r.local_world = parse_int("LOCAL_WORLD_SIZE", v, 1);
    const char* addr = env("MASTER_ADDR");
    if (!addr || !*addr) throw std::runtime_error("RANK is set but MASTER_ADDR is not");
    r.master_addr = addr;
  } else if (const char* procid = env("SLURM_PROCID")) {
    const char* ntasks = env("SLURM_NTASKS");
    if (!ntasks) throw std::runtime_error("SLURM_PROCID is set but SLURM_NTASKS is not");
    r.source = "slurm";
    r.rank = parse_int("SLURM_PROCID", procid, 0);
    r.world = parse_int("SLURM_NTASKS", ntasks, 1);
    if (const char* v = env("SLURM_LOCALID")) r.local_rank = parse_int("SLURM_LOCALID", v, 0);
    if (const char* v = env("SLURM_TASKS_PER_NODE"))
      r.local_world = first_count("SLURM_TASKS_PER_NODE", v);
    const char* addr = env("MASTER_ADDR");
    const char* nodes = env("SLURM_STEP_NODELIST");
    if (!nodes) nodes = env("SLURM_JOB_NODELIST");
    if (addr && *addr)
      r.master_addr = addr;
    else if (nodes && *nodes)
      r.master_addr = first_slurm_host(nodes);
    else
      throw std::runtime_error("SLURM_PROCID is set but neither MASTER_ADDR nor a node list is");
  } else {
    return std::nullopt;
  }
  if (r.rank >= r.world)
    throw std::runtime_error("rank " + std::to_string(r.rank) + " is outside a world of " +
                             std::to_string(r.world) + " (" + r.source + " environment)");
  if (r.local_rank >= r.local_world) r.local_world = r.local_rank + 1;
  if (const char* port = env("MASTER_PORT")) r.master_port = parse_int("MASTER_PORT", port, 1);
  if (r.master_port > 65535)
    throw std::runtime_error("MASTER_PORT=" + std::to_string(r.master_port) + " is not a port");
  if (const char* t = env("WB_RENDEZVOUS_TIMEOUT"))
    r.timeout = std::chrono::seconds(parse_int("WB_RENDEZVOUS_TIMEOUT", t, 1));
  return r;
}

}  // namespace wb
