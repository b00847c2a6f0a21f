"""A small test API (a library of shelves and books) compiled with protoc at test time, using
the google.api.http features our own protos do not (yet): nested path fields, multi-segment
variables, a named JSON body field, custom verbs, enums, repeated and int64 query parameters."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[3]

LIBRARY_PROTO = """
syntax = "proto3";
package test.library.v1;
import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";

// Library serves shelves and books.
service LibraryService {
  // Gets a book by resource name.
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = {
      get: "/v1/{name=shelves/*/books/*}"
      additional_bindings { get: "/v1/books/{name}" }
    };
  }
  // Updates a book; the body is the book.
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = {patch: "/v1/{book.name=shelves/*/books/*}" body: "book"};
  }
  // Searches books.
  rpc SearchBooks(SearchBooksRequest) returns (SearchBooksResponse) {
    option (google.api.http) = {get: "/v1/shelves/{shelf}/books:search"};
  }
  // Creates a book.
  rpc CreateBook(CreateBookRequest) returns (Book) {
    option (google.api.http) = {post: "/v1/shelves/{shelf}/books" body: "*"};
  }
  // Not exposed.
  rpc Internal(GetBookRequest) returns (Book);
}

// Genre of a book.
enum Genre {
  // Unknown.
  GENRE_UNSPECIFIED = 0;
  // Fiction.
  GENRE_FICTION = 1;
  // Poetry.
  GENRE_POETRY = 2;
}

// A book.
message Book {
  // Resource name shelves/*/books/*.
  string name = 1;
  // Title.
  string title = 2;
  // Price in minor units.
  int64 price_minor = 3;
  // Genre.
  Genre genre = 4;
  // When it was published.
  google.protobuf.Timestamp published = 5;
}

// GetBookRequest names a book.
message GetBookRequest {
  // Resource name.
  string name = 1;
}

// UpdateBookRequest carries the book.
message UpdateBookRequest {
  // The book; its name selects which.
  Book book = 1;
  // Only validate.
  bool validate_only = 2;
}

// Filter is nested in SearchBooksRequest.
message Filter {
  // Genres to include.
  repeated Genre genres = 1;
  // Cheaper than this.
  int64 max_price_minor = 2;
}

// SearchBooksRequest selects books.
message SearchBooksRequest {
  // The shelf.
  string shelf = 1;
  // Words.
  repeated string words = 2;
  // Filter.
  Filter filter = 3;
  // Newer than this.
  google.protobuf.Timestamp after = 4;
}

// SearchBooksResponse lists books.
message SearchBooksResponse {
  // Matches.
  repeated Book books = 1;
}

// CreateBookRequest creates a book on a shelf.
message CreateBookRequest {
  // The shelf.
  string shelf = 1;
  // The book.
  Book book = 2;
}
"""


def build_library(tmp: Path) -> bytes:
    """The descriptor set (imports and source info) of the test library API."""
    (tmp / "library.proto").write_text(LIBRARY_PROTO)
    out = tmp / "library.binpb"
    wkt = resources.files("grpc_tools") / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"-I{REPO / 'third_party' / 'googleapis'}",
            f"-I{wkt}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            "--include_source_info",
            "library.proto",
        ]
    )
    assert code == 0, "protoc failed on the test library"
    return out.read_bytes()
