// A small RAII layer over the HDF5 C API: handles that close themselves, and failures turned
// into exceptions that name the file and the object, with HDF5's own messages captured into
// them (its automatic printing to stderr is switched off). Only what the metrics file needs.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace wb::h5 {

// An HDF5 failure: "<file>: <object>: <what> (<HDF5's messages>)".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, int os_error = 0)
      : std::runtime_error(message), os_error(os_error) {}
  // The OS error behind a failed read or write (HDF5 puts it only into its message text, "errno
  // = 28"), 0 when none: writers tell a full disk by it (store/disk_space.h).
  int os_error;
};

// Owns one HDF5 identifier and closes it with the matching H5*close function.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t), std::string file, std::string object)
      : id_(id), close_(close), file_(std::move(file)), object_(std::move(object)) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept { *this = std::move(other); }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t id() const { return id_; }
  bool valid() const { return id_ >= 0; }
  const std::string& file() const { return file_; }
  const std::string& object() const { return object_; }  // "/series/train/loss/step"
  // Closes now and throws if HDF5 reports an error (a late write failure shows up here).
  void close();
  void reset() noexcept;

  // Throws an Error naming this handle's file and object.
  [[noreturn]] void fail(const std::string& what) const;

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
  std::string file_, object_;
};

// Throws Error("<file>: <object>: <what> (<HDF5 messages>)"), clearing HDF5's error stack.
[[noreturn]] void fail(const std::string& file, const std::string& object, const std::string& what);

// Switches off HDF5's automatic error printing for the calling thread (each thread has its own
// error stack in a thread-safe build). Called by every entry point below; cheap after the first.
void silence_errors();

class Group;
class Dataset;

// Something that holds attributes and may hold links: a file, a group or a dataset.
class Object : public Handle {
 public:
  using Handle::Handle;

  bool has_attribute(const std::string& name) const;
  void remove_attribute(const std::string& name);  // no-op when absent
  // Variable-length UTF-8 string attribute (h5py reads it as str); replaces an existing one.
  void set_string_attribute(const std::string& name, const std::string& value);
  void set_int_attribute(const std::string& name, std::int64_t value);
  std::string string_attribute(const std::string& name) const;  // fixed or variable length
  std::int64_t int_attribute(const std::string& name) const;
  std::vector<std::string> attribute_names() const;
  std::string child_path(const std::string& name) const;  // object path of a child
};

class Group : public Object {
 public:
  using Object::Object;

  // True when the (possibly nested, '/'-separated) link exists below this group.
  bool exists(const std::string& path) const;
  Group open_group(const std::string& path) const;
  // Opens the group, creating it and any missing parent groups.
  Group require_group(const std::string& path);
  Dataset open_dataset(const std::string& path) const;
  void remove(const std::string& path);  // unlinks; no-op when absent

  enum class Kind { Group, Dataset, Other };
  struct Child {
    std::string name;
    Kind kind;
  };
  std::vector<Child> children() const;  // in name order

  // A chunked dataset extendable along its first dimension, starting with 0 rows:
  // int64 [n] when width == 0, float64 [n, width] otherwise.
  Dataset create_int64_series(const std::string& name);
  Dataset create_float64_series(const std::string& name, std::int64_t width);
  // A fixed-size float64 dataset holding `values` (scalar dataset when shape is empty).
  Dataset create_float64(const std::string& name, const std::vector<double>& values,
                         const std::vector<std::int64_t>& shape);
};

class Dataset : public Object {
 public:
  using Object::Object;

  std::vector<std::int64_t> shape() const;  // empty for a scalar dataset
  std::int64_t rows() const;                // first dimension (1 for a scalar)
  // Appends rows along the first dimension. `data` holds rows x (product of other dims).
  void append(const std::vector<std::int64_t>& data);
  void append(const std::vector<double>& data);
  // Shrinks or grows the first dimension (chunked datasets only).
  void resize_rows(std::int64_t rows);
  std::vector<std::int64_t> read_int64() const;
  std::vector<double> read_float64() const;

 private:
  void append_raw(const void* data, hid_t mem_type, std::size_t count);
};

class File : public Group {
 public:
  using Group::Group;

  // Creates (truncating) or opens a file; throws Error naming the file when it cannot.
  static File create(const std::filesystem::path& path);
  static File open(const std::filesystem::path& path, bool writable);
  // Flushes and closes every object of the file, throwing if HDF5 reports a failure.
  void close_checked();
};

}  // namespace wb::h5
