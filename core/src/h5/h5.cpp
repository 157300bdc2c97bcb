#include "h5/h5.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <numeric>

namespace wb::h5 {

namespace {

// Collects the descriptions of an HDF5 error stack, innermost last.
herr_t collect_error(unsigned, const H5E_error2_t* error, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  std::string line = error->desc ? error->desc : "";
  if (error->func_name && *error->func_name) line = std::string(error->func_name) + ": " + line;
  if (!line.empty() && std::find(out->begin(), out->end(), line) == out->end())
    out->push_back(line);
  return 0;
}

std::string take_error_stack() {
  hid_t stack = H5Eget_current_stack();  // copies and clears the thread's stack
  if (stack < 0) return {};
  std::vector<std::string> lines;
  H5Ewalk2(stack, H5E_WALK_DOWNWARD, collect_error, &lines);
  H5Eclose_stack(stack);
  std::string text;
  for (const auto& l : lines) text += (text.empty() ? "" : "; ") + l;
  return text;
}

// The errno of a failed read or write: HDF5's file drivers put it into their message ("...,
// errno = 28, error message = 'No space left on device', ..."); else the one the call left.
int os_error_in(const std::string& details, int fallback) {
  const std::string key = "errno = ";
  const std::size_t at = details.find(key);
  if (at == std::string::npos) return fallback;
  int value = 0;
  for (std::size_t i = at + key.size();
       i < details.size() && value < 100000 && std::isdigit(static_cast<unsigned char>(details[i]));
       ++i)
    value = value * 10 + (details[i] - '0');
  return value > 0 ? value : fallback;
}

std::string join_path(const std::string& parent, const std::string& name) {
  if (parent.empty() || parent == "/") return "/" + name;
  return parent + "/" + name;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// A property list or datatype or dataspace that only lives inside one function.
Handle temp(hid_t id, herr_t (*close)(hid_t), const Handle& owner, const std::string& what) {
  if (id < 0) owner.fail(what);
  return Handle(id, close, owner.file(), owner.object());
}

Handle utf8_string_type(const Handle& owner) {
  Handle type = temp(H5Tcopy(H5T_C_S1), H5Tclose, owner, "cannot copy the string type");
  if (H5Tset_size(type.id(), H5T_VARIABLE) < 0 || H5Tset_cset(type.id(), H5T_CSET_UTF8) < 0)
    owner.fail("cannot build the string type");
  return type;
}

Handle dataspace_of(const Handle& dataset) {
  return temp(H5Dget_space(dataset.id()), H5Sclose, dataset, "cannot get the dataspace");
}

std::vector<std::int64_t> dims_of(const Handle& space, const Handle& owner) {
  int rank = H5Sget_simple_extent_ndims(space.id());
  if (rank < 0) owner.fail("cannot get the rank");
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0 && H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr) < 0)
    owner.fail("cannot get the dimensions");
  return std::vector<std::int64_t>(dims.begin(), dims.end());
}

Dataset create_series(Group& group, const std::string& name, hid_t file_type, int rank,
                      std::int64_t width) {
  silence_errors();
  const std::string object = group.child_path(name);
  hsize_t dims[2] = {0, static_cast<hsize_t>(width)};
  hsize_t max_dims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(width)};
  // About 8 KiB per chunk: small enough for short runs, large enough for long ones.
  const hsize_t row_bytes =
      8 * static_cast<hsize_t>(rank == 2 ? std::max<std::int64_t>(width, 1) : 1);
  hsize_t chunk[2] = {std::max<hsize_t>(16, 8192 / row_bytes), static_cast<hsize_t>(width)};
  Handle space = temp(H5Screate_simple(rank, dims, max_dims), H5Sclose, group,
                      "cannot create the dataspace of " + object);
  Handle dcpl = temp(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, group,
                     "cannot create a property list for " + object);
  if (H5Pset_chunk(dcpl.id(), rank, chunk) < 0) fail(group.file(), object, "cannot set chunking");
  hid_t id = H5Dcreate2(group.id(), name.c_str(), file_type, space.id(), H5P_DEFAULT, dcpl.id(),
                        H5P_DEFAULT);
  if (id < 0) fail(group.file(), object, "cannot create the dataset");
  return Dataset(id, H5Dclose, group.file(), object);
}

}  // namespace

void silence_errors() {
  thread_local bool done = false;
  if (done) return;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  done = true;
}

void fail(const std::string& file, const std::string& object, const std::string& what) {
  const int saved_errno = errno;
  std::string message = file;
  if (!object.empty()) message += ": " + object;
  message += ": " + what;
  const std::string details = take_error_stack();
  if (!details.empty()) message += " (" + details + ")";
  throw Error(message, os_error_in(details, saved_errno));
}

// --- Handle

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    close_ = other.close_;
    file_ = std::move(other.file_);
    object_ = std::move(other.object_);
    other.id_ = -1;
  }
  return *this;
}

void Handle::reset() noexcept {
  if (id_ >= 0 && close_) {
    if (close_(id_) < 0) H5Eclear2(H5E_DEFAULT);  // destructors cannot report; close() can
  }
  id_ = -1;
}

void Handle::close() {
  if (id_ < 0) return;
  const hid_t id = id_;
  id_ = -1;
  if (close_ && close_(id) < 0) fail("cannot close");
}

void Handle::fail(const std::string& what) const {
  h5::fail(file_, object_, what);
}

// --- Object

std::string Object::child_path(const std::string& name) const {
  return join_path(object(), name);
}

bool Object::has_attribute(const std::string& name) const {
  silence_errors();
  htri_t r = H5Aexists(id(), name.c_str());
  if (r < 0) fail("cannot check attribute '" + name + "'");
  return r > 0;
}

void Object::remove_attribute(const std::string& name) {
  if (!has_attribute(name)) return;
  if (H5Adelete(id(), name.c_str()) < 0) fail("cannot delete attribute '" + name + "'");
}

void Object::set_string_attribute(const std::string& name, const std::string& value) {
  silence_errors();
  remove_attribute(name);
  Handle type = utf8_string_type(*this);
  Handle space = temp(H5Screate(H5S_SCALAR), H5Sclose, *this, "cannot create a dataspace");
  Handle attr(H5Acreate2(id(), name.c_str(), type.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose, file(), object());
  if (!attr.valid()) fail("cannot create attribute '" + name + "'");
  const char* text = value.c_str();
  if (H5Awrite(attr.id(), type.id(), &text) < 0) fail("cannot write attribute '" + name + "'");
  attr.close();
}

void Object::set_int_attribute(const std::string& name, std::int64_t value) {
  silence_errors();
  remove_attribute(name);
  Handle space = temp(H5Screate(H5S_SCALAR), H5Sclose, *this, "cannot create a dataspace");
  Handle attr(H5Acreate2(id(), name.c_str(), H5T_STD_I64LE, space.id(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose, file(), object());
  if (!attr.valid()) fail("cannot create attribute '" + name + "'");
  if (H5Awrite(attr.id(), H5T_NATIVE_INT64, &value) < 0)
    fail("cannot write attribute '" + name + "'");
  attr.close();
}

std::string Object::string_attribute(const std::string& name) const {
  silence_errors();
  Handle attr(H5Aopen(id(), name.c_str(), H5P_DEFAULT), H5Aclose, file(), object());
  if (!attr.valid()) fail("cannot open attribute '" + name + "'");
  Handle type =
      temp(H5Aget_type(attr.id()), H5Tclose, *this, "cannot get the type of '" + name + "'");
  if (H5Tget_class(type.id()) != H5T_STRING) fail("attribute '" + name + "' is not a string");
  htri_t variable = H5Tis_variable_str(type.id());
  if (variable < 0) fail("cannot inspect attribute '" + name + "'");
  if (variable > 0) {
    Handle mem = utf8_string_type(*this);
    char* text = nullptr;
    if (H5Aread(attr.id(), mem.id(), &text) < 0) fail("cannot read attribute '" + name + "'");
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  const std::size_t size = H5Tget_size(type.id());
  std::string value(size, '\0');
  if (size > 0 && H5Aread(attr.id(), type.id(), value.data()) < 0)
    fail("cannot read attribute '" + name + "'");
  value.resize(std::min(value.find('\0'), value.size()));  // fixed strings are padded
  return value;
}

std::int64_t Object::int_attribute(const std::string& name) const {
  silence_errors();
  Handle attr(H5Aopen(id(), name.c_str(), H5P_DEFAULT), H5Aclose, file(), object());
  if (!attr.valid()) fail("cannot open attribute '" + name + "'");
  std::int64_t value = 0;
  if (H5Aread(attr.id(), H5T_NATIVE_INT64, &value) < 0)
    fail("cannot read attribute '" + name + "' as an integer");
  return value;
}

namespace {
herr_t collect_attribute(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> Object::attribute_names() const {
  silence_errors();
  std::vector<std::string> names;
  hsize_t index = 0;
  if (H5Aiterate2(id(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_attribute, &names) < 0)
    fail("cannot list attributes");
  return names;
}

// --- Group

bool Group::exists(const std::string& path) const {
  silence_errors();
  // H5Lexists fails rather than answering false when a parent is missing: walk the parts.
  std::string prefix;
  for (const auto& part : split_path(path)) {
    prefix += (prefix.empty() ? "" : "/") + part;
    htri_t r = H5Lexists(id(), prefix.c_str(), H5P_DEFAULT);
    if (r < 0) fail("cannot check whether '" + prefix + "' exists");
    if (r == 0) return false;
  }
  return !prefix.empty();
}

Group Group::open_group(const std::string& path) const {
  silence_errors();
  hid_t gid = H5Gopen2(id(), path.c_str(), H5P_DEFAULT);
  if (gid < 0) h5::fail(file(), child_path(path), "cannot open the group");
  return Group(gid, H5Gclose, file(), child_path(path));
}

Group Group::require_group(const std::string& path) {
  if (exists(path)) return open_group(path);
  Handle lcpl = temp(H5Pcreate(H5P_LINK_CREATE), H5Pclose, *this, "cannot create a property list");
  if (H5Pset_create_intermediate_group(lcpl.id(), 1) < 0) fail("cannot set intermediate groups");
  hid_t gid = H5Gcreate2(id(), path.c_str(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT);
  if (gid < 0) h5::fail(file(), child_path(path), "cannot create the group");
  return Group(gid, H5Gclose, file(), child_path(path));
}

Dataset Group::open_dataset(const std::string& path) const {
  silence_errors();
  hid_t did = H5Dopen2(id(), path.c_str(), H5P_DEFAULT);
  if (did < 0) h5::fail(file(), child_path(path), "cannot open the dataset");
  return Dataset(did, H5Dclose, file(), child_path(path));
}

void Group::remove(const std::string& path) {
  if (!exists(path)) return;
  if (H5Ldelete(id(), path.c_str(), H5P_DEFAULT) < 0)
    h5::fail(file(), child_path(path), "cannot delete");
}

std::vector<Group::Child> Group::children() const {
  silence_errors();
  H5G_info_t info;
  if (H5Gget_info(id(), &info) < 0) fail("cannot get the group's information");
  std::vector<Child> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t size =
        H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (size < 0) fail("cannot get the name of link " + std::to_string(i));
    std::string name(static_cast<std::size_t>(size) + 1, '\0');
    H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                       H5P_DEFAULT);
    name.resize(static_cast<std::size_t>(size));
    Handle obj(H5Oopen(id(), name.c_str(), H5P_DEFAULT), H5Oclose, file(), child_path(name));
    if (!obj.valid()) obj.fail("cannot open");  // e.g. a dangling soft link
    const H5I_type_t type = H5Iget_type(obj.id());
    out.push_back({name, type == H5I_GROUP     ? Kind::Group
                         : type == H5I_DATASET ? Kind::Dataset
                                               : Kind::Other});
  }
  return out;
}

Dataset Group::create_int64_series(const std::string& name) {
  return create_series(*this, name, H5T_STD_I64LE, 1, 0);
}

Dataset Group::create_float64_series(const std::string& name, std::int64_t width) {
  return create_series(*this, name, H5T_IEEE_F64LE, width > 0 ? 2 : 1, width);
}

Dataset Group::create_float64(const std::string& name, const std::vector<double>& values,
                              const std::vector<std::int64_t>& shape) {
  silence_errors();
  const std::string object = child_path(name);
  const std::int64_t count =
      std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
  if (count != static_cast<std::int64_t>(values.size()))
    h5::fail(file(), object,
             "shape holds " + std::to_string(count) + " values but " +
                 std::to_string(values.size()) + " were given");
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Handle space =
      temp(shape.empty() ? H5Screate(H5S_SCALAR)
                         : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
           H5Sclose, *this, "cannot create the dataspace of " + object);
  hid_t did = H5Dcreate2(id(), name.c_str(), H5T_IEEE_F64LE, space.id(), H5P_DEFAULT, H5P_DEFAULT,
                         H5P_DEFAULT);
  if (did < 0) h5::fail(file(), object, "cannot create the dataset");
  Dataset dataset(did, H5Dclose, file(), object);
  if (!values.empty() &&
      H5Dwrite(did, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
    dataset.fail("cannot write");
  return dataset;
}

// --- Dataset

std::vector<std::int64_t> Dataset::shape() const {
  silence_errors();
  Handle space = dataspace_of(*this);
  return dims_of(space, *this);
}

std::int64_t Dataset::rows() const {
  const auto dims = shape();
  return dims.empty() ? 1 : dims[0];
}

void Dataset::resize_rows(std::int64_t rows) {
  silence_errors();
  auto dims = shape();
  if (dims.empty()) fail("cannot resize a scalar dataset");
  dims[0] = rows;
  std::vector<hsize_t> size(dims.begin(), dims.end());
  if (H5Dset_extent(id(), size.data()) < 0)
    fail("cannot resize to " + std::to_string(rows) + " rows");
}

void Dataset::append_raw(const void* data, hid_t mem_type, std::size_t count) {
  silence_errors();
  auto dims = shape();
  if (dims.empty()) fail("cannot append to a scalar dataset");
  std::int64_t row_size = 1;
  for (std::size_t i = 1; i < dims.size(); ++i) row_size *= dims[i];
  if (row_size == 0 || static_cast<std::int64_t>(count) % row_size != 0)
    fail("cannot append " + std::to_string(count) + " values in rows of " +
         std::to_string(row_size));
  const std::int64_t new_rows = static_cast<std::int64_t>(count) / row_size;
  if (new_rows == 0) return;
  const std::int64_t old_rows = dims[0];
  resize_rows(old_rows + new_rows);

  std::vector<hsize_t> start(dims.size(), 0), extent(dims.begin(), dims.end());
  start[0] = static_cast<hsize_t>(old_rows);
  extent[0] = static_cast<hsize_t>(new_rows);
  Handle file_space = dataspace_of(*this);
  if (H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, start.data(), nullptr, extent.data(),
                          nullptr) < 0)
    fail("cannot select the appended rows");
  Handle mem_space = temp(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr),
                          H5Sclose, *this, "cannot create the memory dataspace");
  if (H5Dwrite(id(), mem_type, mem_space.id(), file_space.id(), H5P_DEFAULT, data) < 0)
    fail("cannot write " + std::to_string(new_rows) + " rows");
}

void Dataset::append(const std::vector<std::int64_t>& data) {
  append_raw(data.data(), H5T_NATIVE_INT64, data.size());
}

void Dataset::append(const std::vector<double>& data) {
  append_raw(data.data(), H5T_NATIVE_DOUBLE, data.size());
}

std::vector<std::int64_t> Dataset::read_int64() const {
  silence_errors();
  const auto dims = shape();
  std::size_t count = 1;
  for (auto d : dims) count *= static_cast<std::size_t>(d);
  std::vector<std::int64_t> out(count);
  if (count > 0 && H5Dread(id(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail("cannot read as int64");
  return out;
}

std::vector<double> Dataset::read_float64() const {
  silence_errors();
  const auto dims = shape();
  std::size_t count = 1;
  for (auto d : dims) count *= static_cast<std::size_t>(d);
  std::vector<double> out(count);
  if (count > 0 && H5Dread(id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail("cannot read as float64");
  return out;
}

// --- File

namespace {
// SEMI close degree: closing the file fails loudly if an object is still open, instead of
// silently postponing the final write past the point where we fsync and rename.
Handle file_access(const std::string& file) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) fail(file, "", "cannot create a file access property list");
  Handle handle(fapl, H5Pclose, file, "");
  if (H5Pset_fclose_degree(fapl, H5F_CLOSE_SEMI) < 0) fail(file, "", "cannot set the close degree");
#if H5_VERSION_GE(1, 10, 7)
  // Nothing here needs HDF5's advisory locks: a file is written only as a private temporary
  // copy, and readers see whole files renamed into place. Without them, file systems that do
  // not support flock (some NFS and Lustre setups) work too.
  if (H5Pset_file_locking(fapl, false, true) < 0) fail(file, "", "cannot disable file locking");
#endif
  return handle;
}
}  // namespace

File File::create(const std::filesystem::path& path) {
  silence_errors();
  const std::string name = path.string();
  Handle fapl = file_access(name);
  hid_t id = H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id());
  if (id < 0) h5::fail(name, "", "cannot create the HDF5 file");
  return File(id, H5Fclose, name, "/");
}

File File::open(const std::filesystem::path& path, bool writable) {
  silence_errors();
  const std::string name = path.string();
  Handle fapl = file_access(name);
  hid_t id = H5Fopen(name.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.id());
  if (id < 0) h5::fail(name, "", "cannot open as an HDF5 file");
  return File(id, H5Fclose, name, "/");
}

void File::close_checked() {
  if (!valid()) return;
  silence_errors();
  if (H5Fflush(id(), H5F_SCOPE_LOCAL) < 0) fail("cannot write the file");
  close();
}

}  // namespace wb::h5
